"""Build benchmark: pytei (release and --fast) against upstream's plain command, one machine, one run.

For one profile (default: cpu, features candle,http) it runs, one after the other:

1. upstream's documented plain command, ``cargo build --release --bin text-embeddings-router
   --no-default-features -F <features>``, with upstream's own settings (its .cargo/config.toml
   `-C target-cpu=native`, fat LTO, cargo's default jobs).  The only additions are what any
   offline build here needs to resolve at all: the toolchain override and pytei's git source
   arguments (``--config patch...``), so the comparison is of how it builds, not of whether;
2. ``pytei build`` (release: upstream's profile, portable, memory-aware jobs);
3. ``pytei build --fast``;
4. an incremental rebuild of each pytei mode after editing one patch of the series.

Each cold build starts from an empty target directory.  Wall time and peak memory (resident
size of the whole process tree) come from pytei's cargo runner.  Each resulting router then
serves all-MiniLM-L6-v2 (float32) and ``pytei bench`` measures embedding throughput, in
``--rounds`` rounds that alternate between the routers (the median is reported), so drift in a
shared machine's speed does not favour whichever router ran first.
Results: benchmarks/results/build-<profile>.json and .md.

    python benchmarks/bench_build.py [--profile cpu] [--bench-seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytei.build.cargo import run_cargo
from pytei.build.hardware import detect_machine
from pytei.build.options import BuildOptions
from pytei.build.plan import ROUTER_PACKAGE, BuildPlan, BuildRequest, _prepare_tree, make_plan
from pytei.cache import Cache
from pytei.config import load_settings
from pytei.fork.definition import fork_root
from pytei.fork.upstream import ForkOptions, Upstream
from pytei.models.resolve import packaged_model_dir
from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec

RESULTS = Path(__file__).parent / "results"


def _with_target(argv: list[str], target: Path) -> list[str]:
    argv = list(argv)
    argv[argv.index("--target-dir") + 1] = str(target)
    return argv


def _plain_argv(plan: BuildPlan, target: Path) -> list[str]:
    features = list(plan.features)
    patch_args = [a for i, a in enumerate(plan.cargo_argv) if a.startswith("patch.") or (
        a == "--config" and plan.cargo_argv[i + 1].startswith("patch."))]  # fmt: skip
    return [
        "cargo", "build", "--release", "--bin", ROUTER_PACKAGE, "--no-default-features", "-F", ",".join(features),
        "--target-dir", str(target), *patch_args,
    ]  # fmt: skip


def _plain_env(plan: BuildPlan) -> dict[str, str]:
    env = dict(plan.full_env)
    # Upstream's own settings: its .cargo/config.toml rustflags apply when RUSTFLAGS is unset.
    env.pop("RUSTFLAGS", None)
    for key in ("GIT_SHA", "DOCKER_LABEL"):
        env.pop(key, None)
    return env


def _build(name: str, argv: list[str], env: dict[str, str], source: Path, log_dir: Path) -> dict[str, Any]:
    print(f"== {name}: {' '.join(argv[:8])} ...", file=sys.stderr, flush=True)
    outcome = run_cargo(argv, cwd=source, env=env, log_path=log_dir / f"{name}.log", total_units=1)
    print(
        f"   {outcome.wall_seconds / 60:.1f} min, peak {outcome.peak_rss_bytes / 2**30:.2f} GiB",
        file=sys.stderr,
    )
    return {"wall_seconds": round(outcome.wall_seconds, 1), "peak_memory_bytes": outcome.peak_rss_bytes,
            "units_built": outcome.units_built}  # fmt: skip


def _throughput(binary: Path, model: Path, seconds: float) -> dict[str, Any]:
    spec = RouterSpec(binary=binary, model_dir=model, name="bench", router_args=("--dtype", "float32"))
    with ServerProcess(spec, ready_timeout=300) as server:
        result = subprocess.run(
            [sys.executable, "-m", "pytei", "bench", server.url, "--task", "embed", "--batch-size", "4",
             "--tokens", "32", "--concurrency", "4", "--warmup", "3", "--duration", str(seconds), "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    report = json.loads(result.stdout)
    run = report["runs"][0]
    return {"texts_per_s": run["throughput"]["texts_per_s"], "p50_ms": run["latency_ms"]["p50"]}


def _edit_one_patch(fork_root: Path, scratch: Path) -> Path:
    """A copy of the fork definition whose 0002 patch differs by one added comment line."""
    copy = scratch / "fork"
    shutil.copytree(fork_root / "tei_fork", copy / "tei_fork", ignore=shutil.ignore_patterns("target"))
    shutil.copytree(fork_root / "patches", copy / "patches")
    patch = next((copy / "patches").glob("0002-*.patch"))
    text = patch.read_text()
    marker = "+            // behind this flag (3.15+ accepts it by default and ignores the flag).\n"
    if marker not in text:
        raise SystemExit(f"cannot find the line to edit in {patch.name}")
    edited = text.replace(marker, marker + "+            // (benchmark edit)\n").replace(
        "@@ -32,6 +32,9 @@", "@@ -32,6 +32,10 @@"
    )
    patch.write_text(edited)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--bench-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds per router")
    args = parser.parse_args()

    settings = load_settings(env=os.environ)
    options = BuildOptions.from_settings(settings)
    cache = Cache.from_settings(settings)
    machine = detect_machine()
    scratch = Path(tempfile.mkdtemp(prefix="pytei-bench-build-", dir=cache.area("tmp")))
    log_dir = RESULTS / "build-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    model = packaged_model_dir("all-MiniLM-L6-v2", cache)

    release = make_plan(options, cache, BuildRequest(profile=args.profile), machine)
    fast = make_plan(options, cache, BuildRequest(profile=args.profile, mode="fast"), machine)
    source = Path(release.source_dir)
    results: dict[str, dict[str, Any]] = {}
    binaries: dict[str, Path] = {}

    plain_target = scratch / "target-plain"
    results["plain"] = _build(
        "plain", _plain_argv(release, plain_target), _plain_env(release), source, log_dir
    )
    binaries["plain"] = plain_target / "release" / ROUTER_PACKAGE
    shutil.copy2(binaries["plain"], scratch / "router-plain")
    binaries["plain"] = scratch / "router-plain"
    shutil.rmtree(plain_target)

    for name, plan in (("pytei-release", release), ("pytei-fast", fast)):
        target = scratch / f"target-{name}"
        argv = _with_target(plan.cargo_argv, target)
        results[name] = _build(name, argv, plan.full_env, source, log_dir)
        folder = "release" if plan.cargo_profile == "release" else plan.cargo_profile
        binaries[name] = scratch / f"router-{name}"
        shutil.copy2(target / folder / ROUTER_PACKAGE, binaries[name])

    # Edit one patch; the build tree moves to the new commit (only router/build.rs changes).
    edited_root = _edit_one_patch(fork_root(options.fork.fork_dir), scratch)
    edited_settings = load_settings(env={**os.environ, "PYTEI_FORK_DIR": str(edited_root)})
    upstream = Upstream(ForkOptions.from_settings(edited_settings), cache)
    new_commit = upstream.series_commit()
    _prepare_tree(upstream, source, new_commit)
    for name, plan in (("pytei-release", release), ("pytei-fast", fast)):
        target = scratch / f"target-{name}"
        env = {**plan.full_env, "GIT_SHA": new_commit}
        results[f"{name}-incremental"] = _build(f"{name}-incremental", _with_target(plan.cargo_argv, target), env,
                                                 source, log_dir)  # fmt: skip
    # Put the build tree back on the real series.
    _prepare_tree(Upstream(options.fork, cache), source, release.fork_commit)

    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in binaries}
    for _ in range(args.rounds):
        for name, binary in binaries.items():
            rounds[name].append(_throughput(binary, model, args.bench_seconds))
            print(f"   {name}: {rounds[name][-1]}", file=sys.stderr)
    for name, runs in rounds.items():
        results[name]["router"] = {
            "texts_per_s": statistics.median(run["texts_per_s"] for run in runs),
            "p50_ms": statistics.median(run["p50_ms"] for run in runs),
            "rounds_texts_per_s": [run["texts_per_s"] for run in runs],
        }

    def ratio(a: str, b: str, key: str) -> float:
        return round(float(results[a][key]) / float(results[b][key]), 3)

    summary = {
        "fast_vs_plain_wall": ratio("pytei-fast", "plain", "wall_seconds"),
        "fast_vs_plain_peak_memory": ratio("pytei-fast", "plain", "peak_memory_bytes"),
        "release_vs_plain_wall": ratio("pytei-release", "plain", "wall_seconds"),
        "release_vs_plain_peak_memory": ratio("pytei-release", "plain", "peak_memory_bytes"),
        "fast_vs_release_throughput": round(
            results["pytei-fast"]["router"]["texts_per_s"]
            / results["pytei-release"]["router"]["texts_per_s"],
            3,
        ),
        "incremental_vs_cold_release": ratio("pytei-release-incremental", "pytei-release", "wall_seconds"),
        "incremental_vs_cold_fast": ratio("pytei-fast-incremental", "pytei-fast", "wall_seconds"),
    }
    document = {
        "profile": args.profile,
        "features": release.features,
        "machine": {
            "cpu": machine.cpu_summary(),
            "cores": machine.cores,
            "memory_bytes": machine.memory_total,
            "python": platform.python_version(),
            "rustc": release.toolchain["rustc"],
        },
        "date": time.strftime("%Y-%m-%d"),
        "throughput": {
            "rounds": args.rounds,
            "seconds_per_round": args.bench_seconds,
            "load": "embed, batch 4 x 32 tokens, concurrency 4, float32",
        },
        "results": results,
        "summary": summary,
    }
    out = RESULTS / f"build-{args.profile}.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / f"build-{args.profile}.md").write_text(_markdown(document))
    print(_markdown(document))
    shutil.rmtree(scratch, ignore_errors=True)


def _markdown(doc: dict[str, Any]) -> str:
    results = doc["results"]
    lines = [
        (
            f"Build benchmark, profile `{doc['profile']}` ({','.join(doc['features'])}), "
            f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores, {doc['date']}"
        ),
        "",
        "| build | wall | peak memory | router texts/s (median) | rounds | router p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        router = row.get("router", {})
        lines.append(
            f"| {name} | {row['wall_seconds'] / 60:.1f} min | {row['peak_memory_bytes'] / 2**30:.2f} GiB | "
            f"{router.get('texts_per_s', '—')} | {', '.join(map(str, router.get('rounds_texts_per_s', []))) or '—'} | "
            f"{router.get('p50_ms', '—')} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    for key, value in doc["summary"].items():
        lines.append(f"| {key} | {value} |")
    summary = doc["summary"]
    lines += ["", "Targets (issue 3):"]
    for label, key, limit, below in (
        ("--fast wall under half of plain", "fast_vs_plain_wall", 0.5, True),
        ("--fast peak memory under 60% of plain", "fast_vs_plain_peak_memory", 0.6, True),
        ("--fast throughput within 5% of release", "fast_vs_release_throughput", 0.95, False),
        ("incremental rebuild (fast) under a tenth of cold", "incremental_vs_cold_fast", 0.1, True),
        ("incremental rebuild (release) under a tenth of cold", "incremental_vs_cold_release", 0.1, True),
    ):
        met = summary[key] < limit if below else summary[key] >= limit
        lines.append(f"- {label}: {summary[key]} — {'met' if met else 'not met'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
