"""Service state files: what ``pytei ps`` lists and ``pytei stop`` stops.

Every router pytei starts has a live pytei supervising it: the foreground ``pytei serve``, or
for ``--detach`` a supervisor process of its own (:mod:`pytei.serving.supervisor`).  The
supervisor writes ``<cache>/services/<name>.json`` *before* it launches the router (status
``launching``) and keeps it current (``starting``, ``ready``, ``restarting``); the router dies
with its supervisor (``PR_SET_PDEATHSIG``).  So a service whose supervisor lives is listed, a
router is never running without a state file naming its supervisor, and a pid the kernel has
recycled for another program is never signalled (state files keep each pid's creation time).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

from pytei.cache import Cache, atomic_write
from pytei.errors import ServiceNotFoundError
from pytei.serving._spawn import escalate_stop

__all__ = [
    "ServiceMode",
    "ServiceState",
    "ServiceStatus",
    "find_services",
    "list_services",
    "remove_state",
    "services_dir",
    "state_path",
    "stop_request_path",
    "stop_services",
    "write_state",
]

ServiceMode = Literal["detached", "foreground"]
ServiceStatus = Literal["launching", "starting", "ready", "restarting"]

_CREATE_TIME_TOLERANCE = 0.05  # seconds; psutil derives it from jiffies since boot


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int  # 0 while launching (before the router exists)
    create_time: float
    url: str
    port: int
    prometheus_port: int
    model_id: str
    model_dir: str
    binary: str
    log_path: str
    started_at: str
    mode: ServiceMode
    status: ServiceStatus
    supervisor_pid: int | None = None
    supervisor_create_time: float | None = None
    auth: bool = False  # whether the router wants an API key (never the key itself)
    ready_s: float | None = None
    group: str = ""  # the service the router belongs to (`--gpus`: one router per GPU)
    restarts: int = 0
    restart_policy: str = "no"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def service(self) -> str:
        return self.group or self.name

    def process(self) -> psutil.Process | None:
        """The router's process if it is still this router (same pid *and* creation time)."""
        if self.pid <= 0:
            return None
        return _same_process(self.pid, self.create_time)

    def supervisor(self) -> psutil.Process | None:
        if self.supervisor_pid is None or self.supervisor_create_time is None:
            return None
        return _same_process(self.supervisor_pid, self.supervisor_create_time)

    def alive(self) -> bool:
        """The router runs, or its supervisor lives (it is launching or restarting it)."""
        return self.process() is not None or self.supervisor() is not None


def now_iso(timestamp: float | None = None) -> str:
    return datetime.fromtimestamp(timestamp or time.time(), UTC).isoformat(timespec="seconds")


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _same_process(pid: int, created: float) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > _CREATE_TIME_TOLERANCE:
            return None  # the pid now belongs to another program
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
    except psutil.Error:
        return None
    return proc


def _reap(pid: int) -> None:
    """Collect a dead process if it is our own child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def services_dir(cache: Cache) -> Path:
    return cache.area("services")


def state_path(cache: Cache, name: str) -> Path:
    return services_dir(cache) / f"{name}.json"


def stop_request_path(cache: Cache, name: str) -> Path:
    """A file asking the supervisor of ``name`` to stop that router only (then SIGUSR1)."""
    return services_dir(cache) / f"{name}.stop"


def write_state(cache: Cache, state: ServiceState) -> None:
    atomic_write(state_path(cache, state.name), json.dumps(state.as_dict(), indent=2) + "\n")


def remove_state(cache: Cache, name: str, *, supervisor_pid: int | None = None) -> None:
    """Remove a state file (only if it is still the given supervisor's, when given)."""
    path = state_path(cache, name)
    if supervisor_pid is not None:
        current = _read_state(path)
        if current is not None and current.supervisor_pid != supervisor_pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(FileNotFoundError):
        stop_request_path(cache, name).unlink()


def _read_state(path: Path) -> ServiceState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServiceState.from_dict(data)
    except (OSError, ValueError, TypeError):
        return None


def list_services(cache: Cache, *, prune: bool = True) -> list[ServiceState]:
    """Running services by name; state files whose router and supervisor are both gone (or
    whose pids were recycled) are removed."""
    found: list[ServiceState] = []
    for path in sorted(services_dir(cache).glob("*.json")):
        state = _read_state(path)
        if state is not None and state.alive():
            found.append(state)
        elif prune:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return found


def find_services(cache: Cache, name: str | None) -> list[ServiceState]:
    """The routers ``name`` means: one router, or every router of a service (``--gpus``); with
    no name, the only service running."""
    running = list_services(cache)
    if name is not None:
        exact = [state for state in running if state.name == name]
        members = exact or [state for state in running if state.group == name]
        if members:
            return members
        known = ", ".join(sorted({s.service for s in running} | {s.name for s in running})) or "none"
        raise ServiceNotFoundError(
            f"no service named {name!r} is running (running: {known})", hint="see `pytei ps`"
        )
    if not running:
        raise ServiceNotFoundError(
            "no pytei service is running", hint="start one with `pytei serve --detach`"
        )
    services = sorted({state.service for state in running})
    if len(services) > 1:
        raise ServiceNotFoundError(
            f"several services are running ({', '.join(services)}); say which", hint="or pass --all"
        )
    return running


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


def _signal_group(proc: psutil.Process, signum: int) -> None:
    # A router pytei started leads its own process group; signal the group so helpers go too.
    with contextlib.suppress(psutil.Error, OSError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


def _ask(proc: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signum)


def _stop_directly(router: psutil.Process, timeout: float) -> None:
    escalate_stop(
        lambda: _signal_group(router, signal.SIGTERM),
        lambda: _signal_group(router, signal.SIGKILL),
        lambda t, h: _wait_gone(router, t, h),
        timeout=timeout,
        kill_wait=5.0,
    )


def _stop_through(
    cache: Cache, supervisor: psutil.Process, members: list[ServiceState], all_of_it: bool, timeout: float
) -> None:
    if all_of_it:
        _ask(supervisor, signal.SIGTERM)
    else:
        for state in members:
            atomic_write(stop_request_path(cache, state.name), "stop\n")
        _ask(supervisor, signal.SIGUSR1)
    for state in members:
        router = state.process()
        # The supervisor gets the grace time plus a margin before a router is killed from here.
        if router is not None and not _wait_gone(router, timeout + 5.0):
            _signal_group(router, signal.SIGKILL)
            _wait_gone(router, 5.0)
    if all_of_it:
        _wait_gone(supervisor, 10.0)


def stop_services(cache: Cache, states: Iterable[ServiceState], *, timeout: float) -> None:
    """Stop these routers gracefully (SIGTERM), then forcefully (SIGKILL), and forget them.

    They are stopped through the pytei supervising them, so that it exits cleanly (or goes on
    supervising the rest of its routers) instead of reporting their death: SIGTERM when all of
    a supervisor's routers go, otherwise a stop request per router and SIGUSR1.
    """
    by_supervisor: dict[int, list[ServiceState]] = {}
    for state in states:
        by_supervisor.setdefault(state.supervisor_pid or 0, []).append(state)
    everyone = list_services(cache, prune=False)
    for supervisor_pid, members in by_supervisor.items():
        supervisor = members[0].supervisor() if supervisor_pid else None
        if supervisor is None:
            for state in members:
                router = state.process()
                if router is not None:
                    _stop_directly(router, timeout)
        else:
            names = {state.name for state in members}
            all_of_it = all(s.name in names for s in everyone if s.supervisor_pid == supervisor_pid)
            _stop_through(cache, supervisor, members, all_of_it, timeout)
        for state in members:
            remove_state(cache, state.name, supervisor_pid=state.supervisor_pid)
