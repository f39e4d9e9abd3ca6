"""Supervising a service's routers: start all or none, watch them, restart them, stop them.

A :class:`Supervisor` runs in the foreground ``pytei serve``, or, for ``--detach``, in a
process of its own (:mod:`pytei.serving.daemon`) so that someone is always there to restart a
router, answer ``pytei stop`` and keep the state files true.  Every router is launched attached
to its supervisor: it dies with it, even by SIGKILL.

State files (:mod:`pytei.serving.state`) are written *before* each launch (``launching``),
then ``starting``, ``ready`` and, while a dead router waits for its next try, ``restarting``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TextIO

import psutil

from pytei.cache import Cache
from pytei.errors import ConfigError, ServerExitedError
from pytei.serving.api import verify_servers
from pytei.serving.ports import reserve_ports
from pytei.serving.process import ServerProcess, stop_all, wait_all_ready
from pytei.serving.spec import RouterSpec, describe_exit
from pytei.serving.state import (
    ServiceMode,
    ServiceState,
    ServiceStatus,
    create_time,
    list_services,
    now_iso,
    remove_state,
    stop_request_path,
    write_state,
)

__all__ = ["RestartMode", "RestartPolicy", "Supervisor"]

log = logging.getLogger("pytei.serve")

RestartMode = Literal["no", "on-failure", "always"]


@dataclass(frozen=True)
class RestartPolicy:
    """When a router that was ready exits: ``no`` (stop the service), ``on-failure`` (restart it
    unless it exited with status 0), ``always``.  Tries wait ``backoff_s``, doubling up to
    ``max_backoff_s``; after ``max_restarts`` tries in a row the service stops; a router that
    stays ready for ``reset_after_s`` starts the count again."""

    mode: RestartMode = "no"
    max_restarts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ConfigError(
                "restart limits must be non-negative (and the maximum backoff at least the first)"
            )

    def wants(self, returncode: int) -> bool:
        return self.mode == "always" or (self.mode == "on-failure" and returncode != 0)

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_s * 2 ** max(attempt - 1, 0), self.max_backoff_s))


Phase = Literal["running", "waiting", "starting"]


class _Member:
    """One router of the service and where it is in its life."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.spec = server.spec
        self.phase: Phase = "running"
        self.attempts = 0  # restarts in a row (reset after reset_after_s of readiness)
        self.restarts = 0  # in all
        self.ready_at = time.monotonic()
        self.next_at = 0.0
        self.deadline = 0.0
        self.last_exit = ""


class Supervisor:
    """The routers of one ``pytei serve``: ``start()`` them, then ``run()`` until told to stop."""

    def __init__(
        self,
        specs: Sequence[RouterSpec],
        *,
        cache: Cache | None,
        mode: ServiceMode,
        ready_timeout: float,
        stop_timeout: float,
        restart: RestartPolicy | None = None,
        log_stream: TextIO | None = None,
        on_launch: Callable[[ServerProcess], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.cache = cache
        self.mode: ServiceMode = mode
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.restart = restart or RestartPolicy()
        self.log_stream = log_stream
        self.on_launch = on_launch
        self.on_restart = on_restart or (lambda message: log.warning("%s", message))
        self.members: list[_Member] = []
        self._me = psutil.Process()

    @property
    def servers(self) -> list[ServerProcess]:
        return [member.server for member in self.members]

    # -- state files ---------------------------------------------------------------------------

    def _state(
        self, spec: RouterSpec, server: ServerProcess | None, status: ServiceStatus, restarts: int
    ) -> None:
        if self.cache is None:
            return
        pid = server.pid if server is not None and server.started_at is not None else 0
        url = server.url if server is not None else f"http://{spec.hostname}:{spec.port}"
        write_state(
            self.cache,
            ServiceState(
                name=spec.name,
                pid=pid,
                create_time=(create_time(pid) or 0.0) if pid else 0.0,
                url=url,
                port=spec.port or 0,
                prometheus_port=spec.prometheus_port or 0,
                model_id=spec.model_id,
                model_dir=str(spec.model_dir),
                binary=str(spec.binary),
                log_path=str(spec.log_path or (server.log_path if server else "")),
                started_at=now_iso(server.started_at if server is not None else None),
                mode=self.mode,
                status=status,
                supervisor_pid=self._me.pid,
                supervisor_create_time=self._me.create_time(),
                auth=bool(spec.api_key),
                ready_s=None if server is None or server.ready_s is None else round(server.ready_s, 4),
                group=spec.service,
                restarts=restarts,
                restart_policy=self.restart.mode,
            ),
        )

    def _forget(self, spec: RouterSpec) -> None:
        if self.cache is not None:
            remove_state(self.cache, spec.name, supervisor_pid=self._me.pid)

    # -- starting --------------------------------------------------------------------------------

    def _server(self, spec: RouterSpec, prefix: bool) -> ServerProcess:
        return ServerProcess(
            spec,
            ready_timeout=self.ready_timeout,
            stop_timeout=self.stop_timeout,
            log_stream=self.log_stream,
            log_prefix=f"[{spec.name}] " if prefix else "",
        )

    def start(self, cancel: threading.Event | None = None) -> list[ServerProcess]:
        """Launch every router and wait until all are ready: all or nothing.

        The routers become ready concurrently.  If one fails, the others are stopped, their
        state removed, and its error raised.
        """
        ports = [(s.hostname, s.port) for s in self.specs] + [
            (s.hostname, s.prometheus_port) for s in self.specs
        ]
        with reserve_ports(ports) as chosen:
            pass  # all distinct; released just before the routers bind them
        count = len(self.specs)
        self.specs = [
            replace(spec, port=chosen[i], prometheus_port=chosen[count + i])
            for i, spec in enumerate(self.specs)
        ]
        servers = [self._server(spec, count > 1) for spec in self.specs]
        recorded: list[RouterSpec] = []
        try:
            with (
                self.cache.lock("services", timeout=30)
                if self.cache is not None
                else contextlib.nullcontext()
            ):
                self._check_names()
                for spec, server in zip(self.specs, servers, strict=True):
                    self._state(spec, None, "launching", 0)
                    recorded.append(spec)
                    server.start()
                    if self.on_launch is not None:
                        self.on_launch(server)
                    self._state(spec, server, "starting", 0)
            wait_all_ready(servers, timeout=self.ready_timeout, cancel=cancel)
            verify_servers(servers)
        except BaseException:
            stop_all(servers, timeout=self.stop_timeout)
            for spec in recorded:
                self._forget(spec)
            raise
        self.members = [_Member(server) for server in servers]
        for member in self.members:
            self._state(member.spec, member.server, "ready", 0)
        return servers

    def _check_names(self) -> None:
        if self.cache is None:
            return
        running = {state.name: state for state in list_services(self.cache)}
        for spec in self.specs:
            if spec.name in running:
                raise ConfigError(
                    f"a service named {spec.name!r} is already running (pid {running[spec.name].pid or '?'})",
                    hint=f"stop it with `pytei stop {spec.name}`, or pass --name",
                )
            # Logs from the previous run of this name would confuse the tail shown on failure.
            if spec.log_path is not None and spec.log_path.parent == self.cache.root / "services" / spec.name:
                with contextlib.suppress(FileNotFoundError):
                    spec.log_path.unlink()

    # -- supervising -----------------------------------------------------------------------------

    def run(
        self,
        cancel: threading.Event,
        *,
        hurry: threading.Event | None = None,
        stop_requests: threading.Event | None = None,
        interval: float = 0.2,
    ) -> None:
        """Watch the routers until ``cancel`` is set (then stop them all), restart those that
        die as the policy says, and stop those named by stop requests (``stop_requests`` is
        set, e.g. by SIGUSR1).  A router that dies past the policy stops the service: the others
        are stopped and its :class:`ServerExitedError` raised.  Returns when none is left."""
        try:
            while self.members and not cancel.wait(interval):
                if stop_requests is not None and stop_requests.is_set():
                    stop_requests.clear()
                    self._stop_requested()
                for member in list(self.members):
                    self._tick(member)
        finally:
            stop_all(self.servers, hurry=hurry)
            for member in self.members:
                self._forget(member.spec)

    def _stop_requested(self) -> None:
        if self.cache is None:
            return
        for member in list(self.members):
            request = stop_request_path(self.cache, member.spec.name)
            if request.exists():
                member.server.stop()
                self.members.remove(member)
                self._forget(member.spec)

    def _tick(self, member: _Member) -> None:
        now = time.monotonic()
        server = member.server
        if member.phase == "running":
            code = server.poll()
            if code is None:
                if member.attempts and now - member.ready_at > self.restart.reset_after_s:
                    member.attempts = 0
                return
            self._died(member, server.exited_error("while serving"), code)
        elif member.phase == "waiting":
            if now >= member.next_at:
                member.server = self._server(member.spec, len(self.members) > 1)
                self._state(member.spec, None, "launching", member.restarts)
                member.server.start()
                member.phase, member.deadline = "starting", now + self.ready_timeout
                self._state(member.spec, member.server, "starting", member.restarts)
        elif member.phase == "starting":
            code = server.poll()
            if code is not None:
                self._died(member, server.exited_error("while restarting"), code)
            elif server.probe_ready():
                try:
                    verify_servers([server])
                except ServerExitedError as wrong:
                    server.stop()
                    self._died(member, wrong, 1)
                    return
                member.phase, member.ready_at = "running", now
                self._state(member.spec, server, "ready", member.restarts)
                self.on_restart(
                    f"{member.spec.name} is ready again at {server.url} (restart {member.restarts})"
                )
            elif now > member.deadline:
                server.stop()
                error = ServerExitedError(
                    f"the router {member.spec.name!r} was not ready within {self.ready_timeout:g}s of a restart",
                    returncode=server.poll(),
                    log_tail=server.log_tail(),
                )
                self._died(member, error, server.poll() or 1)

    def _died(self, member: _Member, error: ServerExitedError, code: int) -> None:
        if not self.restart.wants(code) or member.attempts >= self.restart.max_restarts:
            if self.restart.mode != "no":
                error.message += (
                    f" (restart policy {self.restart.mode}: gave up after {member.attempts} tries in a row)"
                )
                error.args = (error.message,)
            raise error
        member.attempts += 1
        member.restarts += 1
        delay = self.restart.delay(member.attempts)
        member.phase, member.next_at = "waiting", time.monotonic() + delay
        self._state(member.spec, None, "restarting", member.restarts)
        self.on_restart(
            f"{member.spec.name} {describe_exit(code)}; restarting it in {delay:.1f}s "
            f"(try {member.attempts} of {self.restart.max_restarts}, policy {self.restart.mode})"
        )
