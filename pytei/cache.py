"""pytei's cache directory: where upstream, worktrees, builds, models and state live.

The root is the ``home`` setting (``PYTEI_HOME``) or the platform's user cache directory.
Each area of the cache is guarded by its own file lock so two pytei processes never write
the same area at once, and everything that is produced in several steps is produced beside
its final place and renamed into it, so an interruption never leaves half a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock
import platformdirs
import psutil

from pytei.config import Settings
from pytei.errors import CacheError

__all__ = ["Cache", "atomic_dir", "atomic_write", "sha256_file"]

_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory is pytei's cache (upstream checkouts, builds, models).\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


class Cache:
    """The cache root and its areas; creating one makes the root if needed."""

    def __init__(self, root: Path, *, lock_timeout: float = 600.0) -> None:
        self.root = root.expanduser().resolve()
        self.lock_timeout = lock_timeout
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                atomic_write(tag, _TAG)
        except OSError as exc:
            raise CacheError(
                f"cannot create pytei's cache at {self.root}: {exc.strerror}",
                hint="set PYTEI_HOME to a writable directory",
            ) from exc
        if not os.access(self.root, os.W_OK):
            raise CacheError(
                f"pytei's cache {self.root} is not writable", hint="set PYTEI_HOME to a writable directory"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Cache:
        home = settings.get_str("home")
        root = Path(home) if home else Path(platformdirs.user_cache_dir("pytei", appauthor=False))
        return cls(root, lock_timeout=settings.get_float("lock_timeout"))

    def area(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(
        self,
        name: str,
        *,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        what: str = "",
    ) -> Iterator[None]:
        """Hold the lock of one cache area.

        While another pytei holds it, ``on_wait`` hears once who (pid and what it does).  With no
        ``timeout``, a holder that is alive is waited for as long as it lives (a release build
        takes longer than any fixed timeout); the ``lock_timeout`` setting bounds the wait only
        when the holder cannot be seen.  With ``timeout``, that is the bound.
        """
        locks = self.area("locks")
        owner = locks / f"{name}.owner"
        lock = filelock.FileLock(str(locks / f"{name}.lock"))
        bounded = timeout is not None
        deadline = time.monotonic() + (timeout if timeout is not None else self.lock_timeout)
        told = False
        while True:
            try:
                lock.acquire(timeout=max(0.0, min(1.0, deadline - time.monotonic())) if bounded else 1.0)
                break
            except filelock.Timeout:
                holder = _read_owner(owner)
                alive = holder is not None and _alive(holder)
                if on_wait is not None and not told:
                    told = True
                    on_wait(f"waiting for {_describe(holder)}, which holds pytei's {name!r} lock")
                if time.monotonic() < deadline or (alive and not bounded):
                    continue
                raise CacheError(
                    f"the cache area {name!r} is locked by {_describe(holder)}",
                    hint="wait for that pytei command to finish, or raise lock_timeout",
                ) from None
        try:
            atomic_write(owner, json.dumps({"pid": os.getpid(), "started": time.time(), "what": what}))
            yield
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()
            lock.release()


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _alive(holder: dict[str, Any]) -> bool:
    try:
        process = psutil.Process(int(holder["pid"]))
        return process.create_time() <= float(holder.get("started", time.time())) + 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another pytei process"
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"pid {holder['pid']}{what}"


def atomic_write(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the whole new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``target`` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    scratch.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks (weights and binaries are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
