"""pytei's cache directory: where upstream, worktrees, builds, models and state live.

The root is the ``home`` setting (``PYTEI_HOME``) or the platform's user cache directory.
Each area of the cache is guarded by its own file lock so two pytei processes never write
the same area at once, and everything that is produced in several steps is produced beside
its final place and renamed into it, so an interruption never leaves half a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import filelock
import platformdirs

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
    def lock(self, name: str, *, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock of one cache area; says who holds it when waiting times out."""
        locks = self.area("locks")
        lock_path = locks / f"{name}.lock"
        owner = locks / f"{name}.owner"
        lock = filelock.FileLock(str(lock_path), timeout=self.lock_timeout if timeout is None else timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = owner.read_text(encoding="utf-8").strip() if owner.exists() else "another pytei process"
            raise CacheError(
                f"the cache area {name!r} is locked by {holder}",
                hint="wait for that pytei command to finish, or raise lock_timeout",
            ) from None
        try:
            owner.write_text(f"pid {os.getpid()}", encoding="utf-8")
            yield
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()
            lock.release()


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
