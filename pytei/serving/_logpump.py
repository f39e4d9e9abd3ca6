"""The router's output on its way to the log file: secrets redacted, colour codes removed.

A router writes into a pipe, never into the file pytei keeps: TEI logs its start-up ``Args``
with the API key in them, and only a reader in between can keep the key out of every copy.
The pump reads lines from the pipe, passes each through :class:`~pytei._secrets.Redactor`,
strips ANSI colour codes, appends it to the log (created 0600) and, in the foreground, writes
it to the terminal too.  It ends when every writer has closed the pipe (the router and anything
it started have exited).

Attached routers are pumped by a thread of the pytei process that supervises them (the router
dies with that process, so the pump never outlives what it reads).  A router meant to outlive
pytei is pumped by a small process of its own: ``python -m pytei.serving._logpump LOG``, the
pipe on its stdin and the secrets in its environment (``PYTEI_LOG_SECRETS``, a JSON list),
never in its argv.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from pytei._secrets import Redactor

__all__ = ["LogPump", "open_private_log", "spawn_pump_process"]

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_SECRETS_ENV = "PYTEI_LOG_SECRETS"
_CHUNK = 64 * 1024


def open_private_log(path: Path) -> int:
    """An append-only descriptor of ``path``, readable by its owner only (0600, also when it
    already existed: a log holds whatever the router prints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def pump(
    source: BinaryIO,
    log_fd: int,
    redact: Redactor,
    *,
    stream: TextIO | None = None,
    prefix: str = "",
) -> None:
    """Copy ``source`` to ``log_fd`` (and ``stream``) line by line until end of file."""
    pending = b""
    while True:
        chunk = source.read1(_CHUNK) if hasattr(source, "read1") else source.read(_CHUNK)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            _emit(raw, log_fd, redact, stream, prefix)
    if pending:
        _emit(pending, log_fd, redact, stream, prefix)


def _emit(raw: bytes, log_fd: int, redact: Redactor, stream: TextIO | None, prefix: str) -> None:
    text = redact(_ANSI.sub(b"", raw).decode("utf-8", errors="replace")) + "\n"
    data = text.encode("utf-8")
    with contextlib.suppress(OSError):
        os.write(log_fd, data)
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):
            stream.write(prefix + text)
            stream.flush()


class LogPump:
    """A thread pumping one router's pipe into its log; :meth:`join` once the router is gone."""

    def __init__(
        self,
        read_fd: int,
        log_path: Path,
        secrets: Sequence[str],
        *,
        stream: TextIO | None = None,
        prefix: str = "",
    ) -> None:
        self._source = os.fdopen(read_fd, "rb", buffering=0)
        self._log_fd = open_private_log(log_path)
        self._redact = Redactor(secrets)
        self._thread = threading.Thread(
            target=self._run, args=(stream, prefix), name=f"pytei-log-{log_path.name}", daemon=True
        )
        self._thread.start()

    def _run(self, stream: TextIO | None, prefix: str) -> None:
        try:
            pump(self._source, self._log_fd, self._redact, stream=stream, prefix=prefix)
        finally:
            with contextlib.suppress(OSError):
                self._source.close()
            with contextlib.suppress(OSError):
                os.close(self._log_fd)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the last line (the pipe closes when the router and its helpers have exited)."""
        self._thread.join(timeout)


def spawn_pump_process(read_fd: int, log_path: Path, secrets: Sequence[str]) -> int:
    """A pump that outlives this process (for a detached router), in a session of its own and
    never reaped here (posix_spawn, as for the router); returns its pid."""
    env = {k: v for k, v in os.environ.items() if k != _SECRETS_ENV}
    env[_SECRETS_ENV] = json.dumps([s for s in secrets if s])
    return os.posix_spawn(
        sys.executable,
        [sys.executable, "-m", "pytei.serving._logpump", str(log_path)],
        env,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, read_fd, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ],
        setsid=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m pytei.serving._logpump LOG_FILE  (router output on stdin)", file=sys.stderr)
        return 2
    secrets = json.loads(os.environ.pop(_SECRETS_ENV, "[]"))
    log_fd = open_private_log(Path(args[0]))
    try:
        pump(sys.stdin.buffer, log_fd, Redactor(secrets))
    finally:
        os.close(log_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
