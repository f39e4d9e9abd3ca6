"""The log pump: what reaches router.log and the terminal is plain text with no secret."""

from __future__ import annotations

import io
import os
from pathlib import Path

from pytei._secrets import Redactor
from pytei.serving._logpump import open_private_log, pump


def test_colour_codes_are_stripped_and_the_key_redacted_in_the_log_and_the_stream(tmp_path: Path) -> None:
    key = "k3y$(x)"
    raw = (
        b"\x1b[2m2026-12-01T10:00:00Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[1mtext_embeddings_router\x1b[0m: "
        + f'Args {{ api_key: Some("{key}") }}\n'.encode()
        + b"\x1b[33mWARN\x1b[0m no newline at the end"
    )
    log = tmp_path / "router.log"
    fd = open_private_log(log)
    shown = io.StringIO()
    try:
        pump(io.BytesIO(raw), fd, Redactor([key]), stream=shown, prefix="[r] ")
    finally:
        os.close(fd)
    written = log.read_text()
    assert "\x1b" not in written and "\x1b" not in shown.getvalue()
    assert key not in written and key not in shown.getvalue()
    assert written.splitlines()[1] == "WARN no newline at the end"
    assert (
        shown.getvalue().splitlines()[0].startswith("[r] 2026-12-01T10:00:00Z  INFO text_embeddings_router")
    )
    assert log.stat().st_mode & 0o777 == 0o600
