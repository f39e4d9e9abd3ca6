"""Service state files: what ``pytei ps`` lists and ``pytei stop`` stops.

While a router runs, ``<cache>/services/<name>.json`` records its pid *and the pid's creation
time* (so a pid the kernel has recycled for another program is never signalled), its URL, model
and log.  A detached router outlives pytei; a foreground one is supervised by the pytei that
started it, so stopping it means asking that pytei (which stops all the routers it supervises).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from pytei.cache import Cache, atomic_write
from pytei.errors import ServiceNotFoundError
from pytei.serving._spawn import escalate_stop
from pytei.serving.process import ServerProcess

__all__ = [
    "ServiceState",
    "find_service",
    "list_services",
    "remove_state",
    "services_dir",
    "state_path",
    "stop_service",
    "write_state",
]

_CREATE_TIME_TOLERANCE = 0.05  # seconds; psutil derives it from jiffies since boot


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int
    create_time: float
    url: str
    port: int
    prometheus_port: int
    model_id: str
    model_dir: str
    binary: str
    log_path: str
    started_at: str
    mode: str  # "detached" or "foreground"
    status: str  # "starting" or "ready"
    supervisor_pid: int | None = None
    supervisor_create_time: float | None = None
    auth: bool = False  # whether the router wants an API key (never the key itself)
    ready_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, server: ServerProcess, *, mode: str, status: str) -> ServiceState:
        me = psutil.Process()
        return cls(
            name=server.name,
            pid=server.pid,
            create_time=_create_time(server.pid) or 0.0,
            url=server.url,
            port=server.port,
            prometheus_port=server.prometheus_port,
            model_id=server.spec.model_id,
            model_dir=str(server.spec.model_dir),
            binary=str(server.binary),
            log_path=str(server.log_path),
            started_at=datetime.fromtimestamp(server.started_at or time.time(), UTC).isoformat(
                timespec="seconds"
            ),
            mode=mode,
            status=status,
            supervisor_pid=me.pid if mode == "foreground" else None,
            supervisor_create_time=me.create_time() if mode == "foreground" else None,
            auth=bool(server.spec.api_key),
            ready_s=None if server.ready_s is None else round(server.ready_s, 4),
        )

    def process(self) -> psutil.Process | None:
        """The router's process if it is still this router (same pid *and* creation time)."""
        return _same_process(self.pid, self.create_time)

    def supervisor(self) -> psutil.Process | None:
        if self.supervisor_pid is None or self.supervisor_create_time is None:
            return None
        return _same_process(self.supervisor_pid, self.supervisor_create_time)


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > _CREATE_TIME_TOLERANCE:
            return None  # the pid now belongs to another program
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
    except psutil.Error:
        return None
    return proc


def _reap(pid: int) -> None:
    """Collect a dead router if it is our own child (a detached one started in this process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def services_dir(cache: Cache) -> Path:
    return cache.area("services")


def state_path(cache: Cache, name: str) -> Path:
    return services_dir(cache) / f"{name}.json"


def write_state(cache: Cache, state: ServiceState) -> None:
    atomic_write(state_path(cache, state.name), json.dumps(state.as_dict(), indent=2) + "\n")


def remove_state(cache: Cache, name: str, *, pid: int | None = None) -> None:
    """Remove a state file (only if it still describes ``pid``, when given)."""
    path = state_path(cache, name)
    if pid is not None:
        current = _read_state(path)
        if current is not None and current.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _read_state(path: Path) -> ServiceState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServiceState(**data)
    except (OSError, ValueError, TypeError):
        return None


def list_services(cache: Cache, *, prune: bool = True) -> list[ServiceState]:
    """Running services by name; state files of dead (or recycled-pid) routers are removed."""
    found: list[ServiceState] = []
    for path in sorted(services_dir(cache).glob("*.json")):
        state = _read_state(path)
        if state is not None and state.process() is not None:
            found.append(state)
        elif prune:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return found


def find_service(cache: Cache, name: str | None) -> ServiceState:
    """The running service called ``name``; with no name, the only one running."""
    running = list_services(cache)
    if name is not None:
        for state in running:
            if state.name == name:
                return state
        known = ", ".join(s.name for s in running) or "none"
        raise ServiceNotFoundError(
            f"no service named {name!r} is running (running: {known})", hint="see `pytei ps`"
        )
    if not running:
        raise ServiceNotFoundError(
            "no pytei service is running", hint="start one with `pytei serve --detach`"
        )
    if len(running) > 1:
        names = ", ".join(s.name for s in running)
        raise ServiceNotFoundError(f"several services are running ({names}); say which", hint="or pass --all")
    return running[0]


def _wait_gone(proc: psutil.Process, timeout: float, hurry: threading.Event | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(proc.pid)
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def _signal_router(proc: psutil.Process, signum: int) -> None:
    # A router pytei started leads its own process group; signal the group so helpers go too.
    with contextlib.suppress(psutil.Error, OSError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


def stop_service(cache: Cache, state: ServiceState, *, timeout: float) -> None:
    """Stop one service gracefully (SIGTERM), then forcefully (SIGKILL), and forget it.

    A foreground service is stopped through the pytei supervising it, so that pytei exits
    cleanly instead of reporting its router's death.
    """
    router = state.process()
    supervisor = state.supervisor() if state.mode == "foreground" else None
    if router is not None:
        if supervisor is not None:
            # The supervisor stops its routers (all of them) and exits; it gets the grace time
            # plus a margin for its own shutdown before the router is killed from here.
            def ask() -> None:
                with contextlib.suppress(psutil.Error):
                    supervisor.send_signal(signal.SIGTERM)

            grace = timeout + 5.0
        else:

            def ask() -> None:
                _signal_router(router, signal.SIGTERM)

            grace = timeout
        escalate_stop(
            ask,
            lambda: _signal_router(router, signal.SIGKILL),
            lambda t, h: _wait_gone(router, t, h),
            timeout=grace,
            kill_wait=5.0,
        )
    if supervisor is not None:
        if router is None:
            with contextlib.suppress(psutil.Error):
                supervisor.send_signal(signal.SIGTERM)
        _wait_gone(supervisor, 5.0)
    remove_state(cache, state.name, pid=state.pid)
