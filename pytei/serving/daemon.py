"""``pytei serve --detach``: a supervisor process that outlives the command.

The command (:func:`start_detached`) spawns ``python -m pytei.serving.daemon`` in a session of
its own and writes the job (the router specs, the API key included) on its stdin, a private
pipe: nothing secret is in argv or in a file.  The daemon starts the routers with a
:class:`~pytei.serving.supervisor.Supervisor` and answers on its stdout with one JSON line per
event (``launched``, then ``ready`` or ``error``).  The command prints them and, once all are
ready, writes ``release``: from then on the daemon supervises alone, logging to
``<cache>/services/<service>/supervisor.log``, until ``pytei stop`` (SIGTERM, or SIGUSR1 for
some of its routers).

If the command dies before ``release`` (Ctrl-C, kill -9), the daemon sees its stdin close
and stops everything it started: a half-started service never stays behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pytei.errors as errors_module
from pytei.cache import Cache
from pytei.errors import PyteiError, ServerExitedError
from pytei.serving.process import ServerProcess, StopRequested
from pytei.serving.spec import RouterSpec
from pytei.serving.supervisor import RestartPolicy, Supervisor

__all__ = ["Endpoint", "start_detached"]

log = logging.getLogger("pytei.serve")


@dataclass(frozen=True)
class Endpoint:
    """A started router as ``pytei serve`` reports it (``--json``)."""

    name: str
    url: str
    pid: int
    port: int
    prometheus_port: int
    model_id: str
    model_dir: str
    binary: str
    log_path: str
    ready_s: float | None
    mode: str

    @classmethod
    def of(cls, server: ServerProcess, mode: str) -> Endpoint:
        return cls(
            name=server.name,
            url=server.url,
            pid=server.pid,
            port=server.port,
            prometheus_port=server.prometheus_port,
            model_id=server.spec.model_id,
            model_dir=str(server.spec.model_dir),
            binary=str(server.binary),
            log_path=str(server.log_path),
            ready_s=None if server.ready_s is None else round(server.ready_s, 4),
            mode=mode,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the command's side ---------------------------------------------------------------------


def _error_from(event: Mapping[str, Any]) -> BaseException:
    if event.get("type") == "StopRequested":
        return StopRequested(str(event.get("message", "")))
    cls = getattr(errors_module, str(event.get("type")), None)
    message, hint = str(event.get("message", "")), event.get("hint")
    if isinstance(cls, type) and issubclass(cls, ServerExitedError):
        return cls(
            message, returncode=event.get("returncode"), log_tail=str(event.get("log_tail", "")), hint=hint
        )
    if isinstance(cls, type) and issubclass(cls, PyteiError):
        try:
            return cls(message, hint=hint)
        except TypeError:  # an error class with other required arguments
            pass
    error = PyteiError(message, hint=hint)
    error.exit_code = int(event.get("exit_code", 1))
    return error


def start_detached(
    specs: Sequence[RouterSpec],
    *,
    cache: Cache,
    ready_timeout: float,
    stop_timeout: float,
    restart: RestartPolicy,
    on_launch: Callable[[Endpoint, list[str], bool], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[Endpoint]:
    """Start ``specs`` under a supervisor process and return once all are ready (or raise)."""
    job = {
        "specs": [spec.to_json() for spec in specs],
        "cache": str(cache.root),
        "lock_timeout": cache.lock_timeout,
        "ready_timeout": ready_timeout,
        "stop_timeout": stop_timeout,
        "restart": asdict(restart),
    }
    log_path = cache.root / "services" / specs[0].service / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    job_read, job_write = os.pipe()
    events_read, events_write = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "pytei.serving.daemon"],
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, job_read, 0),
                (os.POSIX_SPAWN_DUP2, events_write, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        for fd in (job_read, events_write, log_fd):
            os.close(fd)
    with (
        os.fdopen(job_write, "w", encoding="utf-8") as to_daemon,
        os.fdopen(events_read, "r", encoding="utf-8") as events,
    ):
        to_daemon.write(json.dumps(job) + "\n")
        to_daemon.flush()
        watcher = _watch_cancel(cancel, to_daemon) if cancel is not None else None
        try:
            for event in _events(events):
                if event["event"] == "launched" and on_launch is not None:
                    on_launch(Endpoint(**event["endpoint"]), list(event["argv"]), bool(event["auth"]))
                elif event["event"] == "ready":
                    to_daemon.write("release\n")
                    to_daemon.flush()
                    return [Endpoint(**endpoint) for endpoint in event["endpoints"]]
                elif event["event"] == "error":
                    raise _error_from(event)
        finally:
            if watcher is not None:
                watcher.set()
    raise ServerExitedError(
        "the supervisor process exited before the routers were ready", hint=f"see its log: {log_path}"
    )


def _events(stream: IO[str]) -> Iterator[dict[str, Any]]:
    for line in stream:
        with_json = line.strip()
        if with_json:
            yield json.loads(with_json)


def _watch_cancel(cancel: threading.Event, to_daemon: IO[str]) -> threading.Event:
    """Forward a cancel (Ctrl-C in the command) to the daemon while it is starting."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.05):
                if not done.is_set():
                    try:
                        to_daemon.write("cancel\n")
                        to_daemon.flush()
                    except (OSError, ValueError):
                        pass
                return

    threading.Thread(target=watch, name="pytei-detach-cancel", daemon=True).start()
    return done


# --- the daemon's side ----------------------------------------------------------------------


def _emit(event: Mapping[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # the command is gone; its stdin closing will say so


def _error_event(exc: BaseException) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "error", "type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, PyteiError):
        event.update(message=exc.message, hint=exc.hint, exit_code=exc.exit_code)
    if isinstance(exc, ServerExitedError):
        event.update(returncode=exc.returncode, log_tail=exc.log_tail)
    return event


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    job = json.loads(sys.stdin.readline())
    cancel, released, stop_requests = threading.Event(), threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGUSR1:
            stop_requests.set()
        else:
            cancel.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, on_signal)

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip() == "release":
                released.set()
                return
            if line.strip() == "cancel":
                break
        if not released.is_set():  # the command is gone (or asked to stop) before release
            cancel.set()

    threading.Thread(target=read_commands, name="pytei-daemon-stdin", daemon=True).start()
    cache = Cache(Path(job["cache"]), lock_timeout=float(job["lock_timeout"]))
    supervisor = Supervisor(
        [RouterSpec.from_json(spec) for spec in job["specs"]],
        cache=cache,
        mode="detached",
        ready_timeout=float(job["ready_timeout"]),
        stop_timeout=float(job["stop_timeout"]),
        restart=RestartPolicy(**job["restart"]),
        on_launch=lambda server: _emit(
            {
                "event": "launched",
                "endpoint": Endpoint.of(server, "detached").as_dict(),
                "argv": server.argv,  # never holds the key: it is in the router's environment
                "auth": bool(server.spec.api_key),
            }
        ),
    )
    try:
        servers = supervisor.start(cancel)
    except BaseException as exc:  # noqa: BLE001 (every failure goes back to the command as an event)
        _emit(_error_event(exc))
        log.error("start failed: %s", exc)
        return 1
    _emit({"event": "ready", "endpoints": [Endpoint.of(s, "detached").as_dict() for s in servers]})
    while not released.wait(0.05):
        if cancel.is_set():
            break
    if not released.is_set():
        log.warning("the command went away before it reported the service ready; stopping it")
        supervisor.run(cancel)  # cancel is set: stops everything and removes the state
        return 1
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the command no longer listens
    os.close(devnull)
    log.info("supervising %s", ", ".join(f"{s.name} (pid {s.pid}, {s.url})" for s in servers))
    try:
        supervisor.run(cancel, stop_requests=stop_requests)
    except ServerExitedError as exc:
        log.error("%s", exc.one_line())
        return 1
    log.info("stopped %s", ", ".join(s.name for s in servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
