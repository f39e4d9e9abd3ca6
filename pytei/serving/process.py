"""Running one TEI router as a supervised child process.

:class:`ServerProcess` launches one router and knows when it is ready: TEI binds its listener
only after loading and warming up the model, so ready means ``GET /health`` answers 200.  Until
then it watches both the clock and the process, so a router that dies (a panic aborts it with
SIGABRT) is reported at once with its exit status and the tail of its log.

- an attached router never outlives pytei: it gets ``PR_SET_PDEATHSIG`` (Linux), so even a
  SIGKILL of pytei takes it down;
- stopping escalates: SIGTERM (TEI drains in-flight requests), then SIGKILL, then reap.

The library entry points (:func:`~pytei.serving.api.serve`, ``serve_process``, ``router_spec``)
are in :mod:`pytei.serving.api`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TextIO

from pytei.build.manifest import BuildManifest
from pytei.errors import ConfigError, RouterNotBuiltError, ServerExitedError, ServerStartTimeout
from pytei.serving._logpump import LogPump, spawn_pump_process
from pytei.serving._logs import read_tail
from pytei.serving._spawn import Child, spawn_attached, spawn_detached
from pytei.serving.health import ProbeError, http_get
from pytei.serving.ports import reserve_ports
from pytei.serving.spec import RouterSpec, describe_exit, log_hint, router_error, secrets_in

__all__ = ["ServerProcess", "StopRequested", "stop_all", "wait_all_ready"]

_READY_POLL_FIRST = 0.002  # seconds; the first health probes come fast, then back off
_READY_POLL_MAX = 0.025  # at most this much time-to-ready is added by polling
_PROBE_TIMEOUT = 0.5


class StopRequested(Exception):
    """A stop was asked for (a signal in the CLI) while pytei was waiting."""


# --- the process ----------------------------------------------------------------------------


class ServerProcess:
    """One router: ``with ServerProcess(spec) as server:`` starts it, waits until it is ready,
    and stops it on exit (also when startup fails or is interrupted).

    ``detach=True`` launches a router meant to outlive pytei (own session, no death signal);
    call :meth:`release` once it is ready.  ``log_stream`` receives the router's log as it is
    written (foreground CLI); the log file is always kept at :attr:`log_path`.
    """

    def __init__(
        self,
        spec: RouterSpec,
        *,
        ready_timeout: float = 600.0,
        stop_timeout: float = 20.0,
        detach: bool = False,
        log_stream: TextIO | None = None,
        log_prefix: str = "",
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.detach = detach
        self.log_stream = log_stream
        self.log_prefix = log_prefix
        self.base_env = base_env
        self.port = spec.port or 0
        self.prometheus_port = spec.prometheus_port or 0
        self.log_path = spec.log_path or Path()
        self.started_at: float | None = None  # time.time() at launch
        self.ready_s: float | None = None  # seconds from launch to the first 200 on /health
        self.argv: list[str] = []
        self._launched = 0.0
        self._child: Child | None = None
        self._log_offset = 0
        self._owns_log = spec.log_path is None
        self._pump: LogPump | None = None
        self._released = False
        self._last_probe = "no answer yet"
        self._grpc = spec.transport == "grpc"

    # -- facts ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def binary(self) -> Path:
        return self.spec.binary

    @property
    def manifest(self) -> BuildManifest | None:
        """How the router was built (None for a binary pytei did not build)."""
        return self.spec.manifest

    @property
    def url(self) -> str:
        host = self.spec.hostname
        if host in ("0.0.0.0", "::"):  # a wildcard listener is reached on loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._child is None:
            raise RuntimeError("the router has not been started")
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return None if self._child is None else self._child.poll()

    def poll(self) -> int | None:
        return self.returncode

    def log_tail(self, lines: int = 40) -> str:
        return read_tail(self.log_path, offset=self._log_offset, lines=lines)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Launch the router (does not wait for it); ports are checked or picked first."""
        if self._child is not None:
            raise RuntimeError("this ServerProcess was already started")
        binary = self.spec.binary
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise RouterNotBuiltError(
                f"the router binary {binary} is not an executable file", hint="run `pytei build`"
            )
        host = self.spec.hostname
        requests = [(host, self.spec.port), (host, self.spec.prometheus_port)]
        if self.spec.port is not None and self.spec.port == self.spec.prometheus_port:
            raise ConfigError(f"port {self.spec.port} is given as both the port and the prometheus port")
        with reserve_ports(requests) as (port, prometheus_port):
            pass  # released here; the router binds them a few milliseconds later
        self.port, self.prometheus_port = port, prometheus_port
        self.argv = self.spec.argv(port, prometheus_port)
        env = self.spec.environment(os.environ if self.base_env is None else self.base_env)
        if self._owns_log:
            fd, name = tempfile.mkstemp(prefix=f"pytei-{self.name}-", suffix=".log")  # 0600
            os.close(fd)
            self.log_path = Path(name)
        self._log_offset = self.log_path.stat().st_size if self.log_path.is_file() else 0
        # The router writes into a pipe; the pump redacts secrets on the way to the log file.
        read_fd, write_fd = os.pipe()
        try:
            if self.detach:
                spawn_pump_process(read_fd, self.log_path, secrets_in(env))
            else:
                self._pump = LogPump(
                    read_fd, self.log_path, secrets_in(env), stream=self.log_stream, prefix=self.log_prefix
                )
                read_fd = -1  # the pump owns it now
            self.started_at = time.time()
            self._launched = time.monotonic()
            if self.detach:
                self._child = spawn_detached(self.argv, env, write_fd)
            else:
                self._child = spawn_attached(self.argv, env, write_fd)
        finally:
            os.close(write_fd)
            if read_fd >= 0:
                os.close(read_fd)
        return self

    def wait_ready(self, timeout: float | None = None, *, cancel: threading.Event | None = None) -> float:
        """Block until ``/health`` answers 200; returns the seconds from launch to ready."""
        wait_all_ready([self], timeout=self.ready_timeout if timeout is None else timeout, cancel=cancel)
        assert self.ready_s is not None
        return self.ready_s

    def _probe(self, timeout: float) -> bool:
        if self._grpc:
            # A gRPC router serves no HTTP /health; it binds its listener only after loading
            # and warming up the model, so an accepted connection means ready.
            try:
                with socket.create_connection((self.spec.hostname, self.port), timeout=timeout):
                    pass
            except OSError as exc:
                self._last_probe = f"gRPC port: {exc.strerror or exc}"
                return False
            self._last_probe = "gRPC port accepts connections"
            return True
        try:
            status, _ = http_get(self.url, "/health", timeout=timeout)
        except ProbeError as exc:
            self._last_probe = exc.detail
            return False
        self._last_probe = f"/health answered {status}"
        return status == 200

    def exited_error(self, when: str) -> ServerExitedError:
        returncode = self.returncode
        assert returncode is not None
        self._stop_follower()
        tail = self.log_tail()
        cause = router_error(tail)
        return ServerExitedError(
            f"the router {self.name!r} {describe_exit(returncode)} {when}" + (f": {cause}" if cause else ""),
            returncode=returncode,
            log_tail=tail,
            hint=log_hint(tail, self.log_path),
        )

    def probe_ready(self) -> bool:
        """One readiness probe (no waiting); remembers ``ready_s`` once it answers."""
        if self.ready_s is None and self._probe(_PROBE_TIMEOUT):
            self.ready_s = time.monotonic() - self._launched
        return self.ready_s is not None

    def check_alive(self) -> None:
        """Raise :class:`ServerExitedError` if the router has exited."""
        if self._child is not None and self.poll() is not None:
            raise self.exited_error("while serving")

    def stop(self, timeout: float | None = None, *, hurry: threading.Event | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default: stop_timeout), SIGKILL, reap.

        ``hurry`` (set e.g. by a second Ctrl-C) skips the rest of the graceful wait.  Returns
        the exit status; a released (detached) router is left alone.
        """
        child = self._child
        if child is None or self._released:
            return None
        returncode = child.stop(self.stop_timeout if timeout is None else timeout, hurry)
        self._stop_follower()
        # A temporary log is removed only after a router that was ready stopped cleanly; after a
        # failure the error message points at it.
        clean = returncode in (0, -signal.SIGTERM, -signal.SIGINT) and self.ready_s is not None
        if self._owns_log and clean:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
        return returncode

    def release(self) -> None:
        """Leave a ready detached router running when pytei goes away."""
        if not self.detach:
            raise RuntimeError("only a detached router can be released (the death signal is set)")
        self._stop_follower()
        self._released = True

    def _stop_follower(self) -> None:
        """Wait for the router's last log lines (its pipe closes once it and its helpers exit)."""
        if self._pump is not None:
            self._pump.join()
            self._pump = None

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._child is None else f"pid {self._child.pid}"
        return f"<ServerProcess {self.name} {self.url} {state}>"


def wait_all_ready(
    servers: Sequence[ServerProcess], *, timeout: float, cancel: threading.Event | None = None
) -> None:
    """Wait until every router answers ``/health`` with 200, watching each process and the clock.

    Raises :class:`ServerExitedError` for the first router that exits, :class:`ServerStartTimeout`
    when ``timeout`` passes, :class:`StopRequested` when ``cancel`` is set.  Stopping is the
    caller's job.
    """
    deadline = time.monotonic() + timeout
    pending = [server for server in servers if server.ready_s is None]
    delay = _READY_POLL_FIRST
    while pending:
        for server in list(pending):
            if server.poll() is not None:
                raise server.exited_error("before it was ready")
            remaining = deadline - time.monotonic()
            if server._probe(max(0.05, min(_PROBE_TIMEOUT, remaining))):
                server.ready_s = time.monotonic() - server._launched
                pending.remove(server)
        if not pending:
            return
        if time.monotonic() >= deadline:
            server = pending[0]
            raise ServerStartTimeout(
                f"the router {server.name!r} was not ready within {timeout:g}s ({server._last_probe})",
                hint=f"raise --ready-timeout (loading and warming up a model can take minutes on CPU); "
                f"its log: {server.log_path}",
            )
        if cancel is not None:
            if cancel.wait(delay):
                raise StopRequested("stop requested while the router was starting")
        else:
            time.sleep(delay)
        delay = min(delay * 1.5, _READY_POLL_MAX)


def stop_all(
    servers: Sequence[ServerProcess], *, timeout: float | None = None, hurry: threading.Event | None = None
) -> None:
    """Stop several routers at once: all get SIGTERM first, so the graceful waits overlap."""
    for server in servers:
        child = server._child
        if child is not None and not server._released:
            child.terminate()
    for server in servers:
        server.stop(timeout, hurry=hurry)
