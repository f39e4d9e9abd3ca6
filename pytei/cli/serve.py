"""``pytei serve``, ``pytei health``, ``pytei stop``, ``pytei ps``: running routers properly."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pytei._secrets import read_api_key
from pytei.cache import Cache
from pytei.cli._app import AppContext, SettingOption, emit_json, pass_app, setting_option
from pytei.config import Settings
from pytei.errors import HealthCheckError, ServerExitedError
from pytei.serving.options import MAX_BATCH_WAIT_US, ServeOptions, ServeTarget
from pytei.serving.process import StopRequested
from pytei.serving.spec import LOG_LEVELS

__all__ = ["COMMANDS"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_on_signals(
    cancel: threading.Event, hurry: threading.Event, stop_requests: threading.Event | None = None
) -> Iterator[list[int]]:
    """The first SIGINT/SIGTERM/SIGHUP asks for a graceful stop, a second one for a quick one;
    SIGUSR1 (``pytei stop`` of some of the routers) sets ``stop_requests``.

    Handlers only set events: the waiting loops notice within milliseconds, and nothing is
    interrupted half-way (a launch, a state file write).
    """
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if signum == signal.SIGUSR1:
            if stop_requests is not None:
                stop_requests.set()
            return
        if cancel.is_set():
            hurry.set()
        else:
            received.append(signum)
            cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (*_STOP_SIGNALS, signal.SIGUSR1)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_log_tail(app: AppContext, tail: str) -> None:
    """The router's last words, when they were not already streamed to the terminal."""
    if tail:
        app.err.print("--- last lines of the router's log ---", markup=False)
        app.err.print(tail, markup=False, highlight=False)
        app.err.print("---", markup=False)


def _serve_settings(
    app: AppContext,
    config: Path | None,
    ready_timeout: float | None,
    stop_timeout: float | None,
    quantize: str | None = None,
    batch_wait_us: int | None = None,
) -> Settings:
    app.use_config(config)
    return app.settings(
        {
            "serve.ready_timeout": ready_timeout,
            "serve.stop_timeout": stop_timeout,
            "serve.onnx_quantize": quantize,
            "serve.batch_wait_us": batch_wait_us,
        }
    )


@click.command(context_settings={"ignore_unknown_options": False})
@setting_option(
    "--model-id", setting="serve.default_model", help="Local model directory, catalogue name or hub id."
)
@click.option("--name", help="Service name for `pytei ps`/`stop` [default: from the model id].")
@setting_option("--port", setting="serve.port", help="Port, or 'auto' for a free one.")
@setting_option("--hostname", setting="serve.hostname", help="Address to listen on.")
@click.option("--profile", help="Use the router `pytei build` installed for this profile.")
@click.option(
    "--binary",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Router binary to run instead of a built one.",
)
@click.option("--pooling", help="Pooling to ask the router for (cls, mean, splade, last-token).")
@setting_option(
    "--quantize",
    setting="serve.onnx_quantize",
    type=click.Choice(["none", "int8"]),
    help="ort routers: serve the export with int8 matmuls (2.1x fp32 on an AMX/VNNI Xeon; "
    "embeddings within ~1% of fp32, the Lee-corpus ranking unchanged).",
)
@setting_option(
    "--batch-wait-us",
    setting="serve.batch_wait_us",
    type=click.IntRange(0, MAX_BATCH_WAIT_US),
    help="Microseconds a batch may wait for the clients just answered, so clients that send "
    "again only after their answer share forward passes instead of alternating [default: 0, TEI's own].",
)
@click.option("--gpus", help="Comma-separated GPU indices: one router per GPU, on consecutive ports.")
@click.option(
    "--api-key",
    help="Key clients must send as 'Authorization: Bearer KEY' [default: $PYTEI_API_KEY]; it reaches "
    "the router in its environment, never in argv.  Prefer the variable: argv is visible in `ps`.",
)
@setting_option(
    "--ready-timeout",
    setting="serve.ready_timeout",
    type=float,
    help="Seconds to wait for /health to answer 200.",
)
@setting_option(
    "--stop-timeout",
    setting="serve.stop_timeout",
    type=float,
    help="Seconds between SIGTERM and SIGKILL when stopping.",
)
@click.option(
    "--detach", is_flag=True, help="Return once ready and leave the router running (see `pytei stop`)."
)
@click.option(
    "--restart",
    type=click.Choice(["no", "on-failure", "always"]),
    default="no",
    show_default=True,
    help="Restart a router that exits after it was ready (with backoff; attached or detached).",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Tries in a row before the service is given up (the count resets after 60 s of readiness).",
)
@click.option(
    "--log-level",
    type=click.Choice(sorted(LOG_LEVELS)),
    default=None,
    help="The router's log filter [default: quiet: start-up and warnings, no line per request].",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write router logs here instead of to stderr.",
)
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Config file whose `services:` to start.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the endpoints as JSON.")
@click.argument("router_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ROUTER_ARGS...]")
@pass_app
def serve(
    app: AppContext,
    *,
    model_id: str | None,
    name: str | None,
    port: str | None,
    hostname: str | None,
    profile: str | None,
    binary: Path | None,
    pooling: str | None,
    quantize: str | None,
    batch_wait_us: int | None,
    gpus: str | None,
    api_key: str | None,
    ready_timeout: float | None,
    stop_timeout: float | None,
    detach: bool,
    restart: str,
    max_restarts: int,
    log_level: str | None,
    log_file: Path | None,
    config: Path | None,
    as_json: bool,
    router_args: Sequence[str],
) -> None:
    """Run the router built by `pytei build` (or --binary) until Ctrl-C / SIGTERM, or --detach.

    Prints each router's URL on stdout once /health answers 200.  With a config file that lists
    `services:` (and no --model-id), starts them all: all ready, or none left running.
    """
    from pytei.serving.daemon import Endpoint, start_detached  # noqa: PLC0415
    from pytei.serving.services import plan_services  # noqa: PLC0415
    from pytei.serving.supervisor import RestartPolicy, Supervisor  # noqa: PLC0415

    settings = _serve_settings(app, config, ready_timeout, stop_timeout, quantize, batch_wait_us)
    cache = Cache.from_settings(settings)
    options = ServeOptions.from_settings(settings)
    target = ServeTarget(
        model_id=model_id,
        name=name,
        port=port,
        hostname=hostname,
        profile=profile,
        binary=binary,
        pooling=pooling,
        router_args=tuple(router_args),
        gpus=tuple(g.strip() for g in gpus.split(",") if g.strip()) if gpus else (),
        api_key=api_key,
        log_file=log_file,
        log_level=log_level,
    )
    policy = RestartPolicy(mode=restart, max_restarts=max_restarts)  # type: ignore[arg-type]
    specs = plan_services(target, options, cache, progress=sys.stderr.isatty())
    streamed = not detach and log_file is None

    def launched(endpoint: Endpoint, argv: Sequence[str], auth: bool) -> None:
        if app.verbose:
            note = "  (API_KEY in its environment)" if auth else ""
            app.err.print(f"+ {shlex.join(argv)}{note}", markup=False, highlight=False, soft_wrap=True)
        app.err.print(
            f"starting {endpoint.name} on {endpoint.url} (pid {endpoint.pid}, model {endpoint.model_id})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    cancel, hurry, stop_requests = threading.Event(), threading.Event(), threading.Event()
    mode = "detached" if detach else "foreground"
    supervisor: Supervisor | None = None
    with _stop_on_signals(cancel, hurry, stop_requests) as received:
        try:
            if detach:
                endpoints = start_detached(
                    specs,
                    cache=cache,
                    ready_timeout=options.ready_timeout,
                    stop_timeout=options.stop_timeout,
                    restart=policy,
                    on_launch=launched,
                    cancel=cancel,
                )
            else:
                supervisor = Supervisor(
                    specs,
                    cache=cache,
                    mode="foreground",
                    ready_timeout=options.ready_timeout,
                    stop_timeout=options.stop_timeout,
                    restart=policy,
                    log_stream=sys.stderr if streamed else None,
                    on_launch=lambda s: launched(Endpoint.of(s, mode), s.argv, bool(s.spec.api_key)),
                    on_restart=lambda message: app.err.print(
                        f"pytei: {message}", markup=False, highlight=False
                    ),
                )
                endpoints = [Endpoint.of(server, mode) for server in supervisor.start(cancel)]
        except StopRequested:
            app.err.print("pytei: stopped before the router was ready")
            raise click.exceptions.Exit(128 + (received[0] if received else signal.SIGINT)) from None
        except ServerExitedError as exc:
            if not streamed:
                _print_log_tail(app, exc.log_tail)
            raise
        for endpoint in endpoints:
            app.err.print(
                f"[green]✓[/] {endpoint.name} ready at {endpoint.url} in {endpoint.ready_s or 0:.2f}s "
                f"(pid {endpoint.pid}, log {endpoint.log_path})",
                highlight=False,
                soft_wrap=True,
            )
        if as_json:
            emit_json([endpoint.as_dict() for endpoint in endpoints])
        else:
            for endpoint in endpoints:
                click.echo(endpoint.url)
        sys.stdout.flush()
        if supervisor is None:
            return
        try:
            supervisor.run(cancel, hurry=hurry, stop_requests=stop_requests)
        except ServerExitedError as exc:
            if not streamed:
                _print_log_tail(app, exc.log_tail)
            raise
        how = signal.Signals(received[0]).name if received else "request"
        app.err.print(f"stopped {', '.join(e.name for e in endpoints)} ({how})", highlight=False)


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (also on failure).")
@click.option(
    "--wait", type=float, default=0.0, show_default=True, help="Retry until healthy for this many seconds."
)
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for each answer."
)
@click.option("--api-key", help="Bearer key for /info [default: $PYTEI_API_KEY].")
@pass_app
def health(
    app: AppContext, *, target: str, as_json: bool, wait: float, timeout: float, api_key: str | None
) -> None:
    """Check a router (URL, or the name of a pytei service): exit 0 when healthy.

    Prints what it serves (from /info); otherwise exits non-zero with the reason: refused,
    timeout, unhealthy (503), auth (401 on /info) or error.
    """
    from pytei.serving.health import check_health  # noqa: PLC0415

    url = _service_url(app, target)
    try:
        report = check_health(url, api_key=read_api_key(api_key, os.environ), timeout=timeout, wait=wait)
    except HealthCheckError as exc:
        if as_json:
            emit_json({"healthy": False, "url": url, "reason": exc.reason, "error": exc.message})
        raise
    if as_json:
        emit_json(report.as_dict())
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    model_type = report.model_type + (
        f" ({report.pooling} pooling)" if report.pooling and report.model_type == "embedding" else ""
    )
    rows = [
        ("url", report.url),
        ("status", "[green]healthy[/]"),
        ("model id", report.model_id),
        ("model type", model_type),
        ("max input length", report.max_input_length),
        ("max batch tokens", report.max_batch_tokens),
        ("max client batch size", report.max_client_batch_size),
        ("version", report.version),
        ("sha", report.sha),
    ]
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    _stdout_console().print(table)


def _service_url(app: AppContext, target: str) -> str:
    """A running service's URL when ``target`` names one, else ``target`` itself."""
    if "/" in target or ":" in target:
        return target
    from pytei.serving.state import list_services  # noqa: PLC0415

    for state in list_services(Cache.from_settings(app.settings())):
        if state.name == target:
            return state.url
    return target


@click.command()
@click.argument("name", required=False)
@click.option("--all", "stop_all_services", is_flag=True, help="Stop every running pytei service.")
@click.option(
    "--timeout",
    cls=SettingOption,
    setting="serve.stop_timeout",
    type=float,
    help="Seconds between SIGTERM and SIGKILL.",
)
@pass_app
def stop(app: AppContext, name: str | None, stop_all_services: bool, timeout: float | None) -> None:
    """Stop a service started by `pytei serve` (gracefully, then forcefully): one router, or
    every router of a service (`--gpus`), through the pytei that supervises it."""
    from pytei.serving.state import find_services, list_services, stop_services  # noqa: PLC0415

    settings = app.settings({"serve.stop_timeout": timeout})
    cache = Cache.from_settings(settings)
    if stop_all_services and name:
        raise click.UsageError("give a NAME or --all, not both")
    targets = list_services(cache) if stop_all_services else find_services(cache, name)
    stop_services(cache, targets, timeout=settings.get_float("serve.stop_timeout"))
    for state in targets:
        app.err.print(f"stopped {state.name} (pid {state.pid}, {state.url})", highlight=False)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def ps(app: AppContext, as_json: bool) -> None:
    """List running pytei services (state files of dead routers are cleaned up)."""
    from pytei.serving.state import list_services  # noqa: PLC0415

    running = list_services(Cache.from_settings(app.settings()))
    if as_json:
        emit_json([state.as_dict() for state in running])
        return
    if not running:
        app.err.print("no pytei services are running")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "MODE", "PID", "URL", "MODEL", "UP", "LOG"):
        table.add_column(column)
    now = time.time()
    for state in running:
        started = datetime.fromisoformat(state.started_at).timestamp()
        status = state.mode if state.status == "ready" else f"{state.mode} ({state.status})"
        if state.restarts:
            status += f", {state.restarts} restart{'s' if state.restarts > 1 else ''}"
        table.add_row(
            state.name,
            status,
            str(state.pid),
            state.url,
            state.model_id,
            _duration(now - started),
            state.log_path,
        )
    _stdout_console().print(table)


def _stdout_console() -> Console:
    """Tables on stdout; when piped, never truncated to 80 columns (URLs and paths stay whole)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=10_000)
    return console


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


COMMANDS: list[click.Command] = [serve, health, stop, ps]
