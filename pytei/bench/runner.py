"""A whole benchmark: read the target, build the workload once, run each load level, report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pytei._secrets import bearer_headers
from pytei._version import __version__
from pytei.bench.endpoint import Request, Target
from pytei.bench.loadgen import event_loop_name, run_load
from pytei.bench.loadspec import LoadSpec, Progress
from pytei.bench.report import BenchReport, RunResult
from pytei.bench.target import fetch_info
from pytei.bench.texts import (
    LocalTokenizer,
    RouterTokenizer,
    TokenCounter,
    TokenSpec,
    read_texts,
    synthetic_texts,
)
from pytei.bench.workloads import Workload, build_workload, check_against_info
from pytei.build.manifest import BuildManifest
from pytei.errors import BenchError

__all__ = ["BenchConfig", "Prepared", "Sweep", "prepare", "run_benchmark"]

_DEFAULT_QUERY = "What is the capital of France?"
# Texts drawn from an input file (and counted) at most; enough variety for any batch size.
_FILE_POOL = 4096


@dataclass(frozen=True)
class Sweep:
    """``concurrency=1,2,4`` (closed loop) or ``rate=50,100`` (open loop): one run per value."""

    parameter: Literal["concurrency", "rate"]
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Sweep:
        name, _, raw = text.partition("=")
        name = name.strip()
        if name not in ("concurrency", "rate") or not raw.strip():
            raise BenchError(f"bad --sweep {text!r}", hint="use concurrency=1,2,4,8 or rate=50,100,200")
        try:
            values = tuple(float(v) for v in raw.split(",") if v.strip())
        except ValueError:
            raise BenchError(f"bad --sweep {text!r}: values must be numbers") from None
        if not values or min(values) <= 0 or (name == "concurrency" and any(v != int(v) for v in values)):
            raise BenchError(f"bad --sweep {text!r}: values must be positive (whole numbers for concurrency)")
        if len(values) > 64:
            raise BenchError(f"--sweep has {len(values)} values; at most 64")
        return cls("concurrency" if name == "concurrency" else "rate", values)

    def specs(self, base: LoadSpec) -> list[LoadSpec]:
        if self.parameter == "concurrency":
            return [dataclasses.replace(base, concurrency=int(v), rate=None) for v in self.values]
        return [dataclasses.replace(base, concurrency=None, rate=v) for v in self.values]

    def to_json(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "values": list(self.values)}


@dataclass(frozen=True)
class BenchConfig:
    url: str
    load: LoadSpec
    task: str = "embed"
    batch_size: int = 1
    tokens: TokenSpec = field(default_factory=lambda: TokenSpec.parse("32"))
    query_tokens: int = 16
    query: str | None = None
    pairs: bool = False
    truncate: bool = False
    input_file: Path | None = None
    tokenizer: Path | None = None
    distinct: int = 256
    seed: int = 0
    sweep: Sweep | None = None
    api_key: str | None = field(default=None, repr=False)
    manifest_path: Path | None = None
    manifest: BuildManifest | None = None
    served: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Prepared:
    target: Target
    info: dict[str, Any] | None
    workload: Workload
    requests: list[Request]
    tokens_description: str
    counted_by: str | None


def _counter(config: BenchConfig, info: Mapping[str, Any] | None) -> TokenCounter | None:
    if config.tokenizer is not None:
        return LocalTokenizer(config.tokenizer)
    model_id = info.get("model_id") if info else None
    # pytei serve hands the router a local directory, so /info names a tokenizer we can read.
    if isinstance(model_id, str) and (Path(model_id) / "tokenizer.json").is_file():
        try:
            return LocalTokenizer(Path(model_id))
        except BenchError:
            pass
    if info is None:
        return None
    headers = bearer_headers(config.api_key)
    batch = info.get("max_client_batch_size")
    return RouterTokenizer(config.url, headers=headers, batch=batch if isinstance(batch, int) else 32)


def prepare(config: BenchConfig, *, on_event: Callable[[str], None] | None = None) -> Prepared:
    """Everything before the load: /info, checks, texts, token counts, encoded requests."""
    say = on_event or (lambda _line: None)
    target = Target.from_url(config.url)
    info = fetch_info(config.url, api_key=config.api_key)
    if info:
        say(f"target: {info.get('model_id')} (TEI {info.get('version')}, sha {info.get('sha')})")
    else:
        say(f"target: {config.url} (no TEI /info: model not recorded)")
    synthetic = config.input_file is None
    check_against_info(
        info,
        task=config.task,
        batch_size=config.batch_size,
        max_tokens=config.tokens.maximum if synthetic else None,
        truncate=config.truncate,
    )
    counter = _counter(config, info)
    rng = np.random.default_rng(config.seed)
    text_tokens: list[int] | None
    if synthetic:
        if counter is None:
            raise BenchError(
                "synthetic texts of exact token lengths need the model's tokenizer, "
                f"and {config.url} has no TEI /info",
                hint="give --tokenizer PATH (the model's tokenizer.json) or --input-file",
            )
        lengths = config.tokens.sample(rng, max(1, config.distinct))
        say(f"making {len(lengths)} texts of {config.tokens.text} tokens with {counter.source}")
        texts = synthetic_texts(lengths, counter, rng)
        text_tokens = lengths
        description = f"{config.tokens.text} tokens"
    else:
        assert config.input_file is not None
        texts = read_texts(config.input_file)
        if len(texts) > _FILE_POOL:
            texts = [texts[i] for i in sorted(rng.choice(len(texts), size=_FILE_POOL, replace=False))]
        text_tokens = counter.count(texts) if counter is not None else None
        description = f"{config.input_file.name} ({len(texts)} texts)"
        if text_tokens:
            description += f", {np.mean(text_tokens):.0f} tokens mean"
    query = config.query
    paired = config.task == "rerank" or (config.task == "predict" and config.pairs)
    if paired and query is None:
        query = (
            synthetic_texts([config.query_tokens], counter, rng)[0] if counter is not None else _DEFAULT_QUERY
        )
    model = str(info.get("served_model_name") or info.get("model_id")) if info else "tei"
    workload = build_workload(
        config.task,
        texts,
        batch_size=config.batch_size,
        text_tokens=text_tokens,
        query=query,
        pairs=config.pairs,
        truncate=config.truncate,
        counter=counter,
        model=model,
        bodies=config.distinct,
        seed=config.seed,
    )
    requests = workload.requests(target, api_key=config.api_key)
    return Prepared(target, info, workload, requests, description, counter.source if counter else None)


def _specs(config: BenchConfig) -> list[LoadSpec]:
    return config.sweep.specs(config.load) if config.sweep else [config.load]


def run_benchmark(
    config: BenchConfig,
    *,
    on_event: Callable[[str], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    prepared: Prepared | None = None,
) -> BenchReport:
    """Prepare once, then one run per load level (warm-up excluded from each)."""
    say = on_event or (lambda _line: None)
    ready = prepared or prepare(config, on_event=on_event)
    runs: list[RunResult] = []
    specs = _specs(config)
    for number, spec in enumerate(specs, start=1):
        level = f"concurrency {spec.concurrency}" if spec.mode == "closed" else f"rate {spec.rate:g}/s"
        bound = f"{spec.requests} requests" if spec.requests else f"{spec.duration:g} s"
        say(f"run {number}/{len(specs)}: {level}, warm-up {spec.warmup:g} s, then {bound}")
        stats = run_load(ready.target, ready.requests, spec, progress=progress)
        run = RunResult.from_stats(stats, tokens_known=ready.workload.tokens_known)
        runs.append(run)
        say(
            f"  {run.throughput.requests_per_s:,.1f} req/s, p50 {run.latency['p50']:.3g} ms, "
            f"p99 {run.latency['p99']:.3g} ms, {run.error_count} errors"
        )
    return _report(config, ready, runs)


def _mode(config: BenchConfig) -> str:
    if config.sweep is None:
        return config.load.mode
    return "closed" if config.sweep.parameter == "concurrency" else "open"


def _scrubbed(argv: Sequence[str]) -> list[str]:
    """The command line, with any API key given on it replaced."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
        elif arg == "--api-key":
            out.append(arg)
            hide_next = True
        elif arg.startswith("--api-key="):
            out.append("--api-key=***")
        else:
            out.append(arg)
    return out


def _report(config: BenchConfig, ready: Prepared, runs: Sequence[RunResult]) -> BenchReport:
    load = config.load
    workload = ready.workload
    return BenchReport(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tool={
            "name": "pytei",
            "version": __version__,
            "python": platform.python_version(),
            "event_loop": event_loop_name(),
        },
        host={
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "argv": _scrubbed(sys.argv[1:]),
        },
        target={
            "url": config.url,
            "info": ready.info,
            "manifest_path": None if config.manifest_path is None else str(config.manifest_path),
            "manifest": None if config.manifest is None else config.manifest.to_json(),
            "served": None if config.served is None else dict(config.served),
        },
        workload={
            "task": workload.task,
            "route": workload.route,
            "batch_size": workload.batch_size,
            "tokens": config.tokens.text if config.input_file is None else None,
            "tokens_description": ready.tokens_description,
            "input_file": None if config.input_file is None else str(config.input_file),
            "query_tokens": config.query_tokens if workload.pairs and config.query is None else None,
            "pairs": workload.pairs,
            "truncate": workload.truncate,
            "distinct_requests": len(workload.bodies),
            "tokens_per_request_mean": workload.mean_tokens,
            "tokens_counted_by": ready.counted_by if workload.tokens_known else None,
            "seed": config.seed,
        },
        load={
            "mode": _mode(config),
            "concurrency": load.concurrency,
            "rate": load.rate,
            "warmup_s": load.warmup,
            "duration_s": load.duration,
            "requests": load.requests,
            "timeout_s": load.timeout,
            "max_connections": load.max_connections,
            "late_after_ms": load.late_after_ms,
            "sweep": None if config.sweep is None else config.sweep.to_json(),
        },
        runs=tuple(runs),
    )
