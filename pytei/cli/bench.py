"""``pytei bench URL [OPTIONS]`` and ``pytei bench compare A.json B.json``.

Commands of this module are added to the pytei group by pytei.cli.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from pytei._secrets import read_api_key
from pytei.bench.compare import compare_reports, comparison_table
from pytei.bench.loadspec import LoadSpec, Progress
from pytei.bench.report import BenchReport, results_table, server_table
from pytei.bench.runner import BenchConfig, Sweep, run_benchmark
from pytei.bench.target import serve_router
from pytei.bench.texts import TokenSpec
from pytei.bench.workloads import TASKS
from pytei.build.manifest import MANIFEST_NAME, BuildManifest
from pytei.cli._app import AppContext, SettingOption, emit_json, pass_app
from pytei.config import Settings
from pytei.errors import BenchError
from pytei.serving.options import ServeTarget

__all__ = ["COMMANDS", "bench"]

# With --requests and no explicit --duration, the run still ends after this many seconds.
_REQUESTS_TIME_LIMIT_S = 600.0


class _BenchGroup(click.Group):
    """A group whose first argument is either a subcommand (``compare``) or the URL to load."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "URL [OPTIONS]")
        formatter.write_usage(ctx.command_path, "--serve --model-id MODEL [OPTIONS]", prefix="       ")
        formatter.write_usage(ctx.command_path, "compare A.json B.json [OPTIONS]", prefix="       ")

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        run = self.commands["run"]
        run_ctx = click.Context(run, info_name=ctx.info_name, parent=ctx.parent, **run.context_settings)
        records = [
            record
            for param in run.get_params(run_ctx)
            if isinstance(param, click.Option) and (record := param.get_help_record(run_ctx))
        ]
        with formatter.section("Options of a run (pytei bench URL ...)"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)
        self.format_epilog(ctx, formatter)


@click.group(
    "bench",
    cls=_BenchGroup,
    epilog="Run `pytei bench compare --help` for how two runs are judged against run-to-run noise.",
)
def bench() -> None:
    """Load a TEI router and report latency percentiles, throughput and TEI's own timing.

    \b
    Closed loop (--concurrency N): N keep-alive connections, each sending its next request
    when the last one is answered.  Open loop (--rate R): requests are due at a constant rate
    whatever the server does; latency counts from the due time (no coordinated omission),
    requests sent more than --late-ms after their due time are counted as late, and requests
    that find every connection busy wait in a queue (counted) instead of being skipped.
    Warm-up requests are excluded.  Latencies come from HDR histograms (3 significant digits).

    \b
    Texts: synthetic texts of exact token lengths (--tokens), counted as TEI counts them
    (special tokens included) with the model's tokenizer: --tokenizer, else the model
    directory named by the router's /info, else the router's /tokenize.  Or --input-file.

    \b
    Examples:
      pytei bench http://127.0.0.1:8080 --task embed --batch-size 8 --tokens 128
      pytei bench http://127.0.0.1:8080 --sweep concurrency=1,2,4,8,16 --plot curve.png
      pytei bench http://127.0.0.1:8080 --rate 200 --duration 30 --output run.json
      pytei bench --serve --model-id all-MiniLM-L6-v2 --task embed --json
      pytei bench compare before.json after.json
    """


def _positive_int(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise click.BadParameter("must be at least 1", param_hint=name)


@bench.command("run", hidden=True, context_settings={"show_default": True})
@click.argument("url", required=False)
@click.option(
    "--task", type=click.Choice(TASKS), default="embed", help="Route to load (openai = /v1/embeddings)."
)
@click.option("--batch-size", type=int, default=1, help="Texts per request (rerank: documents per query).")
@click.option(
    "--tokens",
    default="32",
    help="Tokens per synthetic text: N, LOW:HIGH (uniform), normal:MEAN,STD, "
    "or N1,N2,... (each equally likely).",
)
@click.option("--query-tokens", type=int, default=16, help="Tokens of the query (rerank, predict --pairs).")
@click.option(
    "--query", default=None, help="Query text instead of a synthetic one (rerank, predict --pairs)."
)
@click.option("--pairs", is_flag=True, help="predict: send (query, text) pairs instead of single texts.")
@click.option("--truncate", is_flag=True, help="Ask TEI to truncate inputs longer than the model allows.")
@click.option(
    "--input-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Texts to send instead of synthetic ones: .txt (one per line) or .jsonl (string or {'text': ...}).",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="The model's tokenizer.json (or its directory) for counting tokens.  "
    "[default: from /info, else /tokenize]",
)
@click.option("--distinct", type=int, default=256, help="Distinct request bodies, sent round-robin.")
@click.option("--seed", type=int, default=0, help="Seed for texts and their order.")
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Closed loop: connections each with one request in flight.",
    cls=SettingOption,
    setting="bench.concurrency",
)
@click.option("--rate", type=float, default=None, help="Open loop: requests per second, constant arrival.")
@click.option("--connections", type=int, default=256, help="Open loop: most connections to open (on demand).")
@click.option(
    "--late-ms", type=float, default=2.0, help="Open loop: a request sent this late is counted late."
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Measured seconds per run; with --requests, the time limit.",
    cls=SettingOption,
    setting="bench.duration",
)
@click.option(
    "--requests", "request_count", type=int, default=None, help="Measured requests per run, then stop."
)
@click.option(
    "--warmup",
    type=float,
    default=None,
    help="Seconds of load before measuring.",
    cls=SettingOption,
    setting="bench.warmup",
)
@click.option(
    "--sweep",
    default=None,
    help="One run per value: concurrency=1,2,4,... (closed loop) or rate=50,100,... (open loop).",
)
@click.option(
    "--timeout", type=float, default=30.0, help="Seconds a request may take before it counts as timed out."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (stdout) instead of tables.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the JSON report."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a plot: latency CDF, and for sweeps throughput vs latency (.png, .svg, .pdf).",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Record this build manifest (pytei build's manifest.json) in the report.",
)
@click.option(
    "--serve", is_flag=True, help="Start a router with `pytei serve` for the run, stop it afterwards."
)
@click.option(
    "--model-id",
    default=None,
    help="--serve: model to serve.",
    cls=SettingOption,
    setting="serve.default_model",
)
@click.option("--profile", default=None, help="--serve: build profile whose router to run.")
@click.option(
    "--binary",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="--serve: router binary to run.",
)
@click.option(
    "--router-arg", "router_args", multiple=True, help="--serve: extra router argument (repeatable)."
)
@click.option(
    "--api-key",
    default=None,
    help="Sent as 'Authorization: Bearer ...' [default: $PYTEI_API_KEY]; prefer the variable.  Never printed.",
)
@pass_app
def run_command(app: AppContext, /, url: str | None, **options: Any) -> None:
    """Benchmark the router at URL (or one started with --serve)."""
    settings = app.settings(
        {
            "bench.warmup": options["warmup"],
            "bench.duration": options["duration"],
            "bench.concurrency": options["concurrency"],
        }
    )
    if options["serve"] == (url is not None):
        raise BenchError(
            "give the URL of a running router, or --serve to start one (not both)",
            hint="pytei bench http://127.0.0.1:8080  or  pytei bench --serve --model-id MODEL",
        )
    if not options["serve"]:
        for name in ("model_id", "profile", "binary"):
            if options[name] is not None:
                raise BenchError(f"--{name.replace('_', '-')} only applies with --serve")
    config = _config(url or "http://serve", options, settings)
    _print_preamble(app.err, config, settings, options)
    with _target(config, options, settings, app.err) as ready:
        report = run_benchmark(ready, on_event=app.err.print, progress=_progress(app.err))
    _emit(report, options, app.err)
    if not any(run.succeeded for run in report.runs):
        errors = sorted({kind for run in report.runs for kind in run.errors})
        raise BenchError(
            f"no request succeeded ({', '.join(errors) or 'nothing was sent'})",
            hint="check the URL, --task against the model, and the router's log",
        )


def _config(url: str, options: dict[str, Any], settings: Settings) -> BenchConfig:
    for name in ("batch_size", "concurrency", "connections", "distinct", "request_count", "query_tokens"):
        _positive_int(options[name], "--" + name.replace("_", "-").replace("request-count", "requests"))
    sweep = Sweep.parse(options["sweep"]) if options["sweep"] else None
    rate = options["rate"]
    if rate is not None and options["concurrency"] is not None:
        raise BenchError("--rate (open loop) and --concurrency (closed loop) exclude each other")
    if sweep is not None:
        if sweep.parameter == "concurrency" and rate is not None:
            raise BenchError("--sweep concurrency=... is a closed loop; drop --rate")
        if sweep.parameter == "concurrency" and options["concurrency"] is not None:
            raise BenchError("--sweep concurrency=... sets the concurrency; drop --concurrency")
        if sweep.parameter == "rate" and options["concurrency"] is not None:
            raise BenchError("--sweep rate=... is an open loop; drop --concurrency")
        if sweep.parameter == "rate":
            rate = sweep.values[0]
    duration = settings.get_float("bench.duration")
    if options["request_count"] is not None and settings.setting("bench.duration").source == "default":
        duration = _REQUESTS_TIME_LIMIT_S
    load = LoadSpec(
        concurrency=None if rate is not None else settings.get_int("bench.concurrency"),
        rate=rate,
        duration=duration,
        requests=options["request_count"],
        warmup=settings.get_float("bench.warmup"),
        timeout=options["timeout"],
        max_connections=options["connections"],
        late_after_ms=options["late_ms"],
    )
    manifest_path: Path | None = options["manifest"]
    return BenchConfig(
        url=url,
        load=load,
        task=options["task"],
        batch_size=options["batch_size"],
        tokens=TokenSpec.parse(options["tokens"]),
        query_tokens=options["query_tokens"],
        query=options["query"],
        pairs=options["pairs"],
        truncate=options["truncate"],
        input_file=options["input_file"],
        tokenizer=options["tokenizer"],
        distinct=options["distinct"],
        seed=options["seed"],
        sweep=sweep,
        api_key=read_api_key(options["api_key"], os.environ),
        manifest_path=manifest_path,
        manifest=BuildManifest.read(manifest_path) if manifest_path is not None else None,
    )


def _print_preamble(err: Console, config: BenchConfig, settings: Settings, options: dict[str, Any]) -> None:
    def source(key: str) -> str:
        origin = settings.setting(key).source
        return "" if origin == "default" else f" ({origin})"

    load = config.load
    if config.sweep is not None:
        level = f"sweep {config.sweep.parameter}=" + ",".join(f"{v:g}" for v in config.sweep.values)
    elif load.rate is not None:
        level = f"open loop at {load.rate:g} req/s (up to {load.max_connections} connections)"
    else:
        level = f"closed loop, concurrency {load.concurrency}{source('bench.concurrency')}"
    if load.requests is not None:
        bound = f"{load.requests} requests (time limit {load.duration:g} s)"
    else:
        bound = f"{load.duration:g} s{source('bench.duration')}"
    target = "a router started with --serve" if options["serve"] else config.url
    err.print(f"pytei bench: {config.task} against {target}", highlight=False)
    err.print(
        f"  {level}; warm-up {load.warmup:g} s{source('bench.warmup')}, then {bound}; "
        f"timeout {load.timeout:g} s",
        highlight=False,
    )
    inputs = str(config.input_file) if config.input_file else f"synthetic, {config.tokens.text} tokens"
    key = "set" if config.api_key else "none"
    err.print(f"  batch {config.batch_size}; texts: {inputs}; API key: {key}", highlight=False)


@contextlib.contextmanager
def _target(
    config: BenchConfig, options: dict[str, Any], settings: Settings, err: Console
) -> Iterator[BenchConfig]:
    if not options["serve"]:
        yield config
        return
    model_id = options["model_id"] or settings.get_str("serve.default_model")
    err.print(f"starting a router for {model_id} ...", highlight=False)
    target = ServeTarget(
        model_id=model_id,
        port="auto",
        hostname="127.0.0.1",
        profile=options["profile"],
        binary=options["binary"],
        router_args=tuple(options["router_args"]),
        api_key=config.api_key or "",
    )
    with serve_router(target, settings) as served:
        err.print(f"router ready at {served.url}", highlight=False)
        manifest = config.manifest if config.manifest is not None else served.manifest
        manifest_path = config.manifest_path
        if manifest_path is None and served.manifest is not None:
            manifest_path = Path(served.manifest.binary.path).with_name(MANIFEST_NAME)
        yield dataclasses.replace(
            config,
            url=served.url,
            manifest_path=manifest_path,
            manifest=manifest,
            served={"model_id": model_id, "profile": options["profile"], "binary": _str(options["binary"])},
        )
    err.print("router stopped", highlight=False)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _progress(err: Console) -> Any:
    if not err.is_terminal:
        return None

    def show(progress: Progress) -> None:
        err.print(
            f"  {progress.phase} {progress.elapsed_s:5.1f} s: "
            f"{progress.completed} done, {progress.errors} errors",
            highlight=False,
        )

    return show


def _emit(report: BenchReport, options: dict[str, Any], err: Console) -> None:
    if options["output"] is not None:
        report.save(options["output"])
        err.print(f"report written to {options['output']}", highlight=False)
    if options["plot"] is not None:
        from pytei.bench.plot import plot_report  # noqa: PLC0415 - matplotlib is optional and slow to import

        plot_report(report, options["plot"])
        err.print(f"plot written to {options['plot']}", highlight=False)
    if options["as_json"]:
        emit_json(report.to_json())
        return
    out = _stdout()
    out.print(results_table(report))
    breakdown = server_table(report)
    if breakdown is not None:
        out.print(breakdown)


def _stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or redirected: keep the wide tables on one line per row.
        console.width = max(console.width, 160)
    return console


@bench.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--fail-if-worse", is_flag=True, help="Exit with an error when B is worse than A beyond noise.")
def compare_command(a: Path, b: Path, as_json: bool, fail_if_worse: bool) -> None:
    """Compare two `pytei bench --output` reports: B/A ratios and a noise verdict.

    \b
    Load levels are matched by concurrency or rate.  For throughput and mean latency, the
    per-second samples of both runs are bootstrapped (2000 rounds, fixed seed) and the 95%
    interval of the difference of means is formed: when it excludes zero the difference is
    real and the verdict says whether B is better or worse; otherwise it is within noise
    ("noise ±%" is the interval's half-width relative to A).  Runs need at least 3 whole
    seconds for a verdict.  Percentiles get ratios only.
    """
    comparison = compare_reports(
        BenchReport.load_file(a), BenchReport.load_file(b), a_name=str(a), b_name=str(b)
    )
    if as_json:
        emit_json(comparison.to_json())
    else:
        _stdout().print(comparison_table(comparison))
    if fail_if_worse:
        worse = [f"{r.run} {r.metric}" for r in comparison.rows if r.verdict == "worse"]
        if worse:
            raise BenchError(f"B is worse than A beyond noise: {', '.join(worse)}")


COMMANDS: list[click.Command] = [bench]
