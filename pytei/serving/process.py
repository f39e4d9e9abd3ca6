"""Running the TEI router as a supervised child process.

:class:`ServerProcess` launches one router and knows when it is ready: TEI binds its listener
only after loading and warming up the model, so ready means ``GET /health`` answers 200.  Until
then it watches both the clock and the process, so a router that dies (a panic aborts it with
SIGABRT) is reported at once with its exit status and the tail of its log.

Guarantees:
- the router gets ``--model-id``, ``--hostname`` and ``--port`` explicitly, and an environment
  without the variables clap would otherwise read (an inherited ``HOSTNAME`` or ``PORT`` would
  silently move the listener);
- the API key travels in the environment (``API_KEY``), never in argv, so it is not visible in
  ``ps`` or ``/proc/<pid>/cmdline``;
- an attached router never outlives pytei: it gets ``PR_SET_PDEATHSIG`` (Linux), so even a
  SIGKILL of pytei takes it down;
- stopping escalates: SIGTERM (TEI drains in-flight requests), then SIGKILL, then reap.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

from pytei._secrets import read_api_key
from pytei.build.manifest import BuildManifest
from pytei.errors import ConfigError, RouterNotBuiltError, ServerExitedError, ServerStartTimeout
from pytei.serving._logs import LogFollower, read_tail
from pytei.serving._spawn import Child, spawn_attached, spawn_detached
from pytei.serving.health import ProbeError, http_get
from pytei.serving.options import ServeOptions, ServeTarget
from pytei.serving.ports import parse_port, reserve_ports

if TYPE_CHECKING:
    from pytei.cache import Cache
    from pytei.client import Client
    from pytei.config import Settings

__all__ = [
    "SCRUBBED_ENV",
    "RouterBinary",
    "RouterSpec",
    "ServerProcess",
    "StopRequested",
    "describe_exit",
    "resolve_router",
    "router_environment",
    "router_spec",
    "serve",
    "serve_process",
    "stop_all",
    "wait_all_ready",
]


# Variables the router reads through clap (docs/tei-upstream.md §2.1).  pytei passes what it
# means on the command line; an inherited one would silently change the router (HOSTNAME is set
# by most shells and by Docker, PORT=80 by TEI's own images).  A service's ``env:`` may set them
# back on purpose.
SCRUBBED_ENV = frozenset(
    {
        "MODEL_ID", "REVISION", "TOKENIZATION_WORKERS", "DTYPE", "SERVED_MODEL_NAME", "POOLING",
        "MAX_CONCURRENT_REQUESTS", "MAX_BATCH_TOKENS", "MAX_BATCH_REQUESTS", "MAX_CLIENT_BATCH_SIZE",
        "AUTO_TRUNCATE", "DEFAULT_PROMPT_NAME", "DEFAULT_PROMPT", "DENSE_PATH", "HOSTNAME", "PORT",
        "UDS_PATH", "PAYLOAD_LIMIT", "API_KEY", "JSON_OUTPUT", "DISABLE_SPANS", "OTLP_ENDPOINT",
        "OTLP_SERVICE_NAME", "PROMETHEUS_PORT", "CORS_ALLOW_ORIGIN", "TASK",
    }
)  # fmt: skip

# Router flags pytei sets itself; giving them again in router_args is refused with the reason.
_OWN_FLAGS = {
    "--model-id": "use --model-id (pytei resolves it to a checked local directory)",
    "--hostname": "use --hostname",
    "--port": "use --port",
    "-p": "use --port",
    "--api-key": "use pytei's --api-key or PYTEI_API_KEY (passed to the router in its environment)",
}
_READY_POLL_FIRST = 0.002  # seconds; the first health probes come fast, then back off
_READY_POLL_MAX = 0.025  # at most this much time-to-ready is added by polling
_PROBE_TIMEOUT = 0.5


class StopRequested(Exception):
    """A stop was asked for (a signal in the CLI) while pytei was waiting."""


def describe_exit(returncode: int) -> str:
    """``-6`` -> "was killed by SIGABRT (the router panicked ...)"; ``1`` -> "exited with status 1"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = {
        "SIGABRT": " (the router panicked: release builds abort on panic)",
        "SIGKILL": " (out of memory, or killed from outside)",
        "SIGSEGV": " (a crash in native code)",
    }.get(name, "")
    return f"was killed by {name}{why}"


# Log patterns that point at a cause, with what to do about it.
_LOG_HINTS = (
    (
        re.compile(r"address already in use", re.IGNORECASE),
        "a port was taken after pytei checked it; try again or use --port auto",
    ),
    (
        re.compile(r"compute cap", re.IGNORECASE),
        "the router was built for another GPU; rebuild it with `pytei build`",
    ),
    (
        re.compile(r"out of memory|CUDA_ERROR_OUT_OF_MEMORY", re.IGNORECASE),
        "not enough GPU memory; lower --max-batch-tokens",
    ),
    (
        re.compile(r"Could not start a suitable backend", re.IGNORECASE),
        "the model does not fit this router's backends (see log)",
    ),
)


def _hint_for(tail: str, log_path: Path) -> str:
    for pattern, hint in _LOG_HINTS:
        if pattern.search(tail):
            return f"{hint}; full log: {log_path}"
    return f"see the router's log: {log_path}"


def router_environment(
    base: Mapping[str, str], *, extra: Mapping[str, str] | None = None, api_key: str | None = None
) -> dict[str, str]:
    """``base`` without :data:`SCRUBBED_ENV`, plus ``extra``, plus ``API_KEY`` when given."""
    env = {key: value for key, value in base.items() if key not in SCRUBBED_ENV}
    env.update(extra or {})
    if api_key:
        env["API_KEY"] = api_key
    return env


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class RouterSpec:
    """Everything needed to launch one router.  ``port=None`` means pick a free one."""

    binary: Path
    model_dir: Path
    model_id: str = ""  # what was asked for (hub id, catalogue name or directory), for display
    manifest: BuildManifest | None = field(default=None, compare=False, repr=False)  # None: not pytei's
    name: str = "tei"
    hostname: str = "127.0.0.1"
    port: int | None = None
    prometheus_port: int | None = None  # None: a free one (the router binds it at startup)
    pooling: str | None = None
    router_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the scrubbed environment
    api_key: str | None = field(default=None, repr=False)
    log_path: Path | None = None  # None: a temporary file, removed after a clean stop

    def __post_init__(self) -> None:
        for arg in self.router_args:
            flag = arg.split("=", 1)[0]
            if flag == "--api-key":
                raise ConfigError(
                    "the API key must not be a router argument: argv is visible to every user in `ps`",
                    hint=_OWN_FLAGS[flag],
                )
            if flag in _OWN_FLAGS or re.fullmatch(r"-p\d+", arg):
                raise ConfigError(
                    f"router argument {arg!r} is set by pytei", hint=_OWN_FLAGS.get(flag, "use --port")
                )
            if flag == "--pooling" and self.pooling:
                raise ConfigError("pooling is given twice (--pooling and in the router arguments)")
        given = _flag_value(self.router_args, "--prometheus-port")
        if given is not None and self.prometheus_port is None:
            try:
                object.__setattr__(self, "prometheus_port", int(given))
            except ValueError:
                raise ConfigError(f"--prometheus-port {given!r} is not a port number") from None

    def argv(self, port: int, prometheus_port: int) -> list[str]:
        """The router's command line (never holds the API key)."""
        args = [
            str(self.binary),
            "--model-id",
            str(self.model_dir),
            "--hostname",
            self.hostname,
            "--port",
            str(port),
        ]
        if _flag_value(self.router_args, "--prometheus-port") is None:
            args += ["--prometheus-port", str(prometheus_port)]
        if self.pooling:
            args += ["--pooling", self.pooling]
        dtype = self.manifest.default_dtype if self.manifest is not None else None
        if _flag_value(self.router_args, "--dtype") is None and dtype == "float32":
            # The build decided it (BuildManifest.default_dtype): upstream's float16 default is
            # slower and less exact on a CPU; GPU builds keep the router's own default.
            args += ["--dtype", dtype]
        return args + list(self.router_args)

    @property
    def transport(self) -> str:
        return self.manifest.transport if self.manifest is not None else "http"


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
        self._follower: LogFollower | None = None
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
        env = router_environment(
            os.environ if self.base_env is None else self.base_env,
            extra=self.spec.env,
            api_key=self.spec.api_key,
        )
        if self._owns_log:
            fd, name = tempfile.mkstemp(prefix=f"pytei-{self.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.started_at = time.time()
            self._launched = time.monotonic()
            if self.detach:
                self._child = spawn_detached(self.argv, env, log.fileno())
            else:
                self._child = spawn_attached(self.argv, env, log)
        if self.log_stream is not None:
            self._follower = LogFollower(
                self.log_path, self.log_stream, offset=self._log_offset, prefix=self.log_prefix
            ).start()
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

    def _exited_error(self, when: str) -> ServerExitedError:
        returncode = self.returncode
        assert returncode is not None
        self._stop_follower()
        tail = self.log_tail()
        return ServerExitedError(
            f"the router {self.name!r} {describe_exit(returncode)} {when}",
            returncode=returncode,
            log_tail=tail,
            hint=_hint_for(tail, self.log_path),
        )

    def check_alive(self) -> None:
        """Raise :class:`ServerExitedError` if the router has exited."""
        if self._child is not None and self.poll() is not None:
            raise self._exited_error("while serving")

    def stop(self, timeout: float | None = None, *, hurry: threading.Event | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default: stop_timeout), SIGKILL, reap.

        ``hurry`` (set e.g. by a second Ctrl-C) skips the rest of the graceful wait.  Returns
        the exit status; a released (detached) router is left alone.
        """
        child = self._child
        if child is None or self._released:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if child.poll() is None:
            child.terminate()
            if child.wait(timeout, hurry) is None:
                child.signal_group(signal.SIGKILL)
                child.wait(10.0)
        # Anything the router left in its group (helpers that ignored SIGTERM) goes too.
        child.signal_group(signal.SIGKILL)
        self._stop_follower()
        returncode = child.poll()
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
        if self._follower is not None:
            self._follower.stop()
            self._follower = None

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
                raise server._exited_error("before it was ready")
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


# --- the library entry point ----------------------------------------------------------------


@dataclass(frozen=True)
class RouterBinary:
    """A router to run, and its build manifest when pytei built it."""

    path: Path
    manifest: BuildManifest | None


def resolve_router(
    options: ServeOptions, cache: Cache, *, binary: Path | None = None, profile: str | None = None
) -> RouterBinary:
    """``binary`` if given, else the ``serve.binary`` setting, else the router `pytei build` installed."""
    from pytei.build.installs import find_router  # noqa: PLC0415 (keeps `import pytei.serving.process` light)

    if binary is None and options.binary:
        binary = Path(options.binary)
    if binary is not None:
        path = binary.expanduser()
        if not path.is_file():
            raise RouterNotBuiltError(
                f"the router binary {path} does not exist", hint="check --binary / serve.binary"
            )
        path = path.resolve()
        return RouterBinary(path, BuildManifest.find_beside(path))
    router = find_router(cache, profile or options.profile or None)
    return RouterBinary(router.binary, router.manifest)


def _display_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", Path(model_id.rstrip("/")).name) or "tei"


def router_spec(
    target: ServeTarget, options: ServeOptions, cache: Cache, *, progress: bool = False
) -> RouterSpec:
    """The spec that serves ``target``: the router first (so a missing build is reported before
    any model download), then the model resolved to a checked local directory."""
    from pytei.models.resolve import resolve_model  # noqa: PLC0415 (keeps `import pytei.serving.process` light)

    router = resolve_router(options, cache, binary=target.binary, profile=target.profile)
    chosen = target.model_id or options.default_model
    model = resolve_model(chosen, cache, env=os.environ, progress=progress)
    return RouterSpec(
        binary=router.path,
        manifest=router.manifest,
        model_dir=model.path,
        model_id=chosen,
        name=target.name or _display_name(chosen),
        hostname=target.hostname or options.hostname,
        port=parse_port(target.port if target.port is not None else options.port),
        pooling=target.pooling,
        router_args=target.router_args or options.router_args,
        api_key=read_api_key(target.api_key, os.environ),
        log_path=target.log_file,
    )


@contextlib.contextmanager
def serve_process(
    target: ServeTarget,
    settings: Settings | None = None,
    *,
    ready_timeout: float | None = None,
) -> Iterator[ServerProcess]:
    """A ready router serving ``target``, stopped when the block ends, however it ends."""
    from pytei.cache import Cache  # noqa: PLC0415 (keeps `import pytei.serving.process` light)
    from pytei.config import load_settings  # noqa: PLC0415

    settings = settings if settings is not None else load_settings(env=os.environ)
    options = ServeOptions.from_settings(settings)
    spec = router_spec(target, options, Cache.from_settings(settings), progress=sys.stderr.isatty())
    timeout = ready_timeout if ready_timeout is not None else options.ready_timeout
    with ServerProcess(spec, ready_timeout=timeout, stop_timeout=options.stop_timeout) as server:
        yield server


@contextlib.contextmanager
def serve(
    model_id: str | None = None,
    *,
    port: int | str = "auto",
    hostname: str = "127.0.0.1",
    profile: str | None = None,
    binary: Path | None = None,
    router_args: Sequence[str] = (),
    api_key: str | None = None,
    ready_timeout: float | None = None,
    settings: Settings | None = None,
    log_file: Path | None = None,
) -> Iterator[Client]:
    """Serve ``model_id`` (default: the ``serve.default_model`` setting) and yield a ready Client.

    The router is stopped when the block ends, however it ends.  ``model_id`` may be a local
    directory, a catalogue name or a hub id (resolved to a local snapshot first).  The API key
    defaults to ``PYTEI_API_KEY``; it reaches the router through its environment only.
    """
    from pytei.client import Client  # noqa: PLC0415 (the client package is heavier than serving)

    target = ServeTarget(
        model_id=model_id,
        port=port,
        hostname=hostname,
        profile=profile,
        binary=binary,
        router_args=tuple(router_args),
        api_key=api_key,
        log_file=log_file,
    )
    with (
        serve_process(target, settings, ready_timeout=ready_timeout) as server,
        Client(server.url, api_key=server.spec.api_key or "") as client,
    ):
        yield client
