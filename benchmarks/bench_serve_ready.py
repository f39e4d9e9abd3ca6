"""Time to ready: pytei vs launching the same router by hand.

For the same binary and model directory, measures N times, interleaved, the wall time from the
start of each method until ``GET /health`` answers 200:

- ``by_hand``: ``Popen([binary, --model-id DIR, --hostname 127.0.0.1, --port P,
  --prometheus-port Q])`` with ports chosen beforehand (a person types them), then a tight
  /health loop (1 ms between tries): the best a hand-written script can do;
- ``library``: ``pytei.serving.process.ServerProcess(spec).start()`` + ``wait_ready()``, port picking,
  environment scrubbing and model-directory checks included;
- ``cli``: ``pytei serve --detach`` as a subprocess, until it exits (it exits once ready):
  Python start-up and pytei's imports included, i.e. what a user of the command sees;
- ``cli_import`` (reference, not compared): ``python -c "import pytei.cli"`` alone, the part of
  ``cli`` that is start-up rather than serving.

Reports medians (and min / p90), the difference to ``by_hand`` in ms and the ratio, and writes
JSON + Markdown into ``benchmarks/results/``.  The target is pytei within 150 ms of by hand.

    python benchmarks/bench_serve_ready.py --binary ~/.cache/pytei/routers/cpu/text-embeddings-router \\
        --model-dir /path/to/all-MiniLM-L6-v2 -n 10
    python benchmarks/bench_serve_ready.py --fake -n 10      # the unit tests' fake router
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pytei._version import __version__
from pytei.models.resolve import inspect_model_dir
from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec

ROOT = Path(__file__).resolve().parent.parent
FAKE_ROUTER = ROOT / "tests" / "unit" / "serve" / "fake_router.py"
TARGET_MS = 150.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    try:
        os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


def by_hand(binary: Path, model_dir: Path, extra: list[str], log: Path) -> float:
    port, prometheus = free_port(), free_port()
    argv = [str(binary), "--model-id", str(model_dir), "--hostname", "127.0.0.1", "--port", str(port)]
    argv += ["--prometheus-port", str(prometheus), *extra]
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while not healthy(port):
            if proc.poll() is not None:
                raise RuntimeError(f"the router exited with {proc.returncode}; see {log}")
            time.sleep(0.001)
        elapsed = time.perf_counter() - started
    stop_pid(proc.pid, proc)
    return elapsed


def library(binary: Path, model_dir: Path, extra: list[str], log: Path) -> float:
    started = time.perf_counter()
    spec = RouterSpec(
        binary=binary, model_dir=inspect_model_dir(model_dir).path, router_args=tuple(extra), log_path=log
    )
    server = ServerProcess(spec, ready_timeout=600).start()
    try:
        server.wait_ready()
        return time.perf_counter() - started
    finally:
        server.stop()


def cli(binary: Path, model_dir: Path, extra: list[str], log: Path, home: Path, index: int) -> float:
    env = {**os.environ, "PYTEI_HOME": str(home)}
    argv = [sys.executable, "-m", "pytei", "serve", "--detach", "--json", "--binary", str(binary)]
    argv += [
        "--model-id",
        str(model_dir),
        "--port",
        "auto",
        "--name",
        f"bench-{index}",
        "--log-file",
        str(log),
    ]
    argv += ["--", *extra] if extra else []
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"pytei serve failed ({result.returncode}): {result.stderr}")
    [endpoint] = json.loads(result.stdout)
    stop_pid(int(endpoint["pid"]))
    subprocess.run([sys.executable, "-m", "pytei", "ps"], env=env, capture_output=True, check=False)  # prune
    return elapsed


def cli_import() -> float:
    """Not a way to start a router: the fixed cost inside ``cli`` of starting Python and
    importing ``pytei.cli`` (every command module), to tell it apart from serving."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pytei.cli"], check=True)
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "p90_ms": p90, "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--binary", type=Path, help="router binary")
    parser.add_argument("--model-dir", type=Path, help="local model directory")
    parser.add_argument(
        "--fake", action="store_true", help="use the unit tests' fake router and a dummy model"
    )
    parser.add_argument("-n", "--repeat", type=int, default=10)
    parser.add_argument("--methods", default="by_hand,library,cli,cli_import")
    parser.add_argument("--label", help="name of the result files (default: fake or the binary's profile)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("router_args", nargs="*", help="extra router arguments (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pytei-bench-ready-"))
    if args.fake:
        binary = work / "text-embeddings-router"
        binary.write_text(
            f"#!{sys.executable} -S\nimport runpy\nrunpy.run_path({str(FAKE_ROUTER)!r}, run_name='__main__')\n"
        )
        binary.chmod(0o755)
        model_dir = work / "model"
        model_dir.mkdir()
        config = {"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512}
        (model_dir / "config.json").write_text(json.dumps(config))
        (model_dir / "tokenizer.json").write_text("{}")
        (model_dir / "model.safetensors").write_bytes(b"\0" * 8)
    elif args.binary and args.model_dir:
        binary, model_dir = args.binary.resolve(), args.model_dir.resolve()
    else:
        parser.error("give --binary and --model-dir, or --fake")
    label = args.label or ("fake" if args.fake else binary.parent.name)
    methods: dict[str, Callable[[int], float]] = {
        "by_hand": lambda i: by_hand(binary, model_dir, args.router_args, work / f"hand-{i}.log"),
        "library": lambda i: library(binary, model_dir, args.router_args, work / f"lib-{i}.log"),
        "cli": lambda i: cli(binary, model_dir, args.router_args, work / f"cli-{i}.log", work / "home", i),
        "cli_import": lambda i: cli_import(),
    }
    chosen = [m for m in args.methods.split(",") if m]
    samples: dict[str, list[float]] = {m: [] for m in chosen}
    for i in range(args.repeat):
        # Interleaved, in a rotating order, so drift in machine load hits every method alike.
        order = chosen[i % len(chosen) :] + chosen[: i % len(chosen)]
        for method in order:
            samples[method].append(methods[method](i))
        print(
            f"round {i + 1}/{args.repeat}: "
            + ", ".join(f"{m} {samples[m][-1] * 1000:.1f} ms" for m in chosen)
        )

    stats = {m: summary(s) for m, s in samples.items()}
    base = stats.get("by_hand")
    comparisons = {}
    for method, stat in stats.items():
        if base is None or method in ("by_hand", "cli_import"):
            continue
        diff = stat["median_ms"] - base["median_ms"]
        comparisons[method] = {
            "diff_ms": round(diff, 2),
            "ratio": round(stat["median_ms"] / base["median_ms"], 3),
            "within_target": diff <= TARGET_MS,
        }
    report = {
        "benchmark": "serve_ready",
        "label": label,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "pytei": __version__,
        "binary": str(binary),
        "model_dir": str(model_dir),
        "router_args": args.router_args,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "target_ms": TARGET_MS,
        "samples_ms": {m: [round(s * 1000, 2) for s in v] for m, v in samples.items()},
        "stats": stats,
        "vs_by_hand": comparisons,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"serve_ready-{label}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Time to ready: pytei vs by hand ({label})",
        "",
        (
            f"{report['when']}, pytei {__version__}, {args.repeat} interleaved rounds, binary `{binary}`, "
            f"model `{model_dir}`; load average {report['machine']['loadavg'][0]:.2f} on {os.cpu_count()} CPUs."
        ),
        "",
        "| method | median ms | min ms | p90 ms | vs by hand (median) | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, stat in stats.items():
        comp = comparisons.get(method)
        diff_text = (
            f"{comp['diff_ms']:+.1f} ms" + ("" if comp["within_target"] else " (over target)")
            if comp
            else "-"
        )
        ratio = f"{comp['ratio']:.3f}" if comp else ("1.000" if method == "by_hand" else "-")
        lines.append(
            f"| {method} | {stat['median_ms']:.1f} | {stat['min_ms']:.1f} | {stat['p90_ms']:.1f} | {diff_text} | {ratio} |"
        )
    lines += ["", f"Target: within {TARGET_MS:.0f} ms of by hand. `cli_import` is a reference, not a method."]
    (args.out / f"serve_ready-{label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
