"""Launching a router so that it never outlives pytei by accident (or outlives it on purpose).

Attached routers are forked with ``PR_SET_PDEATHSIG`` set in the child (Linux), so the kernel
kills them when pytei dies, even by SIGKILL.  Detached routers are started with posix_spawn in
a session of their own and are never reaped by this process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["Child", "escalate_stop", "spawn_attached", "spawn_detached"]

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the router when pytei's forking thread dies.

    SIGKILL rather than SIGTERM: this fires only when pytei itself died abruptly, so nobody is
    left to escalate if the router were slow to drain.  The function is resolved here, in the
    parent, so the forked child runs no import or symbol lookup before exec.
    """
    global _prctl  # noqa: PLW0603 (resolved once, used in forked children)
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.prctl
        func.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        func.restype = ctypes.c_int
        _prctl = func
    prctl = _prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # pytei may have died between fork and prctl: then nobody would ever signal us.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """Forks on behalf of other threads from one thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, not the process: a router
    started from a short-lived worker thread would be killed with that thread.  The main
    thread forks itself; any other thread hands the fork to this daemon thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, func: Callable[[], T]) -> T:
        if threading.current_thread() is threading.main_thread():
            return func()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pytei-spawner", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((func, future))
        return future.result()

    def _run(self) -> None:
        while True:
            func, future = self._jobs.get()
            try:
                future.set_result(func())
            except BaseException as exc:  # noqa: BLE001 (re-raised in the calling thread)
                future.set_exception(exc)


_SPAWNER = _Spawner()


class Child:
    """A launched router: a Popen (attached) or a posix_spawn'ed pid (detached)."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None
        self.terminating = False  # SIGTERM sent: a second one could cut a graceful drain short

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self.popen is not None:
            self.returncode = self.popen.poll()
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            self.returncode = -int(signal.SIGKILL)
            return self.returncode
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float, hurry: threading.Event | None = None) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline or (hurry is not None and hurry.is_set()):
                return None
            time.sleep(0.01)
        return self.returncode

    def stop(self, timeout: float, hurry: threading.Event | None = None) -> int | None:
        """Stop it as :func:`escalate_stop` does; then anything left in its process group goes too."""
        if self.poll() is None:
            escalate_stop(
                self.terminate,
                lambda: self.signal_group(signal.SIGKILL),
                lambda t, h: self.wait(t, h) is not None,
                timeout=timeout,
                hurry=hurry,
            )
        # helpers that ignored SIGTERM (the python backend's server) must not outlive it
        self.signal_group(signal.SIGKILL)
        return self.poll()

    def terminate(self) -> None:
        """Ask for a graceful stop (SIGTERM to the group), once."""
        if not self.terminating and self.poll() is None:
            self.terminating = True
            self.signal_group(signal.SIGTERM)

    def signal_group(self, signum: int) -> None:
        """Signal the router's process group (it leads its own session), which also reaches any
        helper it started (the python backend).  Once the router is reaped only the group is
        signalled: the kernel does not hand out a pid that still names a process group, while
        the bare pid could already belong to an unrelated process."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signum)


def escalate_stop(
    terminate: Callable[[], None],
    kill: Callable[[], None],
    wait: Callable[[float, threading.Event | None], bool],
    *,
    timeout: float,
    hurry: threading.Event | None = None,
    kill_wait: float = 10.0,
) -> bool:
    """The one way pytei stops a router: ask (SIGTERM: TEI drains in-flight requests), wait up to
    ``timeout`` or until ``hurry`` is set, then SIGKILL and wait again.  ``wait(t, hurry)`` says
    whether the router is gone.  Returns whether it is gone."""
    terminate()
    if wait(timeout, hurry):
        return True
    kill()
    return wait(kill_wait, None)


def spawn_attached(argv: Sequence[str], env: dict[str, str], output: int) -> Child:
    """Start a router that dies with pytei; its stdout and stderr go to the descriptor ``output``."""

    def launch() -> Child:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session: a Ctrl-C in the terminal reaches pytei only, which then stops the
            # router once, gracefully (instead of the router seeing SIGINT twice).
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509 (prepared in the parent; see _Spawner)
        )
        return Child(popen.pid, popen)

    return _SPAWNER.call(launch)


def spawn_detached(argv: Sequence[str], env: dict[str, str], output: int) -> Child:
    """Start a program meant to outlive pytei, in its own session, output to the descriptor ``output``.

    posix_spawn, not Popen: pytei exits without reaping this child, which Popen would report
    as a leaked process; signals get their default actions back in the router.
    """
    pid = os.posix_spawn(
        argv[0],
        list(argv),
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, output, 1),
            (os.POSIX_SPAWN_DUP2, output, 2),
        ],
        setsid=True,
        setsigmask=(),
        setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE),
    )
    return Child(pid, None)
