"""Router log files: following one onto a terminal, and reading its tail for error messages.

The router always writes into a file (never into a pipe that pytei must drain): a detached
router outlives pytei, and an attached one must not block or die from SIGPIPE if pytei's
reader stalls.  Foreground runs follow the file onto stderr from a thread.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path
from typing import TextIO

__all__ = ["LogFollower", "read_tail", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# How long the follower sleeps when it has caught up with the router.
_FOLLOW_INTERVAL = 0.05


def strip_ansi(text: str) -> str:
    """TEI colours its log lines by default; error messages and tails are plain text."""
    return _ANSI.sub("", text)


def read_tail(path: Path, *, offset: int = 0, lines: int = 40, max_bytes: int = 256 * 1024) -> str:
    """The last ``lines`` lines written after ``offset`` (this run's part of the file)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            start = max(offset, end - max_bytes)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    text = strip_ansi(data.decode("utf-8", errors="replace"))
    return "\n".join(text.rstrip().splitlines()[-lines:])


class LogFollower:
    """Copy what the router appends to its log file onto ``stream``, line by line."""

    def __init__(self, path: Path, stream: TextIO, *, offset: int = 0, prefix: str = "") -> None:
        self.path = path
        self.stream = stream
        self.offset = offset
        self.prefix = prefix
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pytei-log-{path.name}", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Copy what is left, then stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _emit(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(f"{self.prefix}{line}")
            self.stream.flush()

    def _run(self) -> None:
        try:
            handle = self.path.open("rb")
        except OSError:
            return
        with handle:
            handle.seek(self.offset)
            pending = b""
            while True:
                stopping = self._stop.is_set()
                chunk = handle.read(64 * 1024)
                if chunk:
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        self._emit(raw.decode("utf-8", errors="replace") + "\n")
                    continue
                if stopping:
                    # Read everything once more after the stop request, then the last partial line.
                    if pending:
                        self._emit(pending.decode("utf-8", errors="replace") + "\n")
                    return
                self._stop.wait(_FOLLOW_INTERVAL)
