"""Where a 256x128 forward pass spends its GPU time: TEI's CUDA router and PyTorch, kernel by kernel.

Run on the GPU machine (Nsight Compute there; the router and model unpacked by
``benchmarks/gpu_carry.py``).  ``bench_gpu.py`` gives wall-clock ratios; this says whether the gap
is in the kernels (which ones) or between them (launches, host work, synchronizations):

    python3 benchmarks/gpu_kernels.py run --profile ROUTER --model DIR --out OUT
    python3 benchmarks/gpu_kernels.py summarize OUT        # anywhere, on the CSVs it wrote

``run`` profiles, with ``ncu --clock-control none --cache-control none`` and the one metric
``gpu__time_duration.sum`` (kernels serialized, caches left warm, clocks untouched):

- PyTorch fp16 SDPA (transformers), ids on the host to normalized embeddings on the host, the
  256x128 batch bench_gpu times: only the kernels inside an NVTX range around the timed passes;
- TEI: the router as ``pytei serve`` would start it (its CUDA libraries and environment), fed
  one-text requests of 128 tokens enough at once that its batcher forms batches of 256; every
  kernel from start-up on.  A forward pass starts at the embedding lookup, so ``summarize``
  splits the kernel sequence there and keeps the passes of 256x128 tokens.

Both write ``<out>/<side>.csv`` (ncu's raw page: one row per kernel, in launch order).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

METRIC = "gpu__time_duration.sum"
RANGE = "measured"
# the embedding lookups: candle's index_select kernels (is_u32_f16, ...), or with patch 0016 the
# row-wise kernels (index_select_rows_*), which also gather the pooled rows
LOOKUP = re.compile(r"(\bindex_select|^is_(u8|u32|i64)_)")


def ncu_binary() -> str:
    found = shutil.which("ncu") or next(iter(sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"))), None)
    if not found:
        raise SystemExit("ncu (Nsight Compute) not found: this runs on the GPU machine")
    return found


def ncu_prefix(report: Path, extra: Sequence[str] = ()) -> list[str]:
    return [
        ncu_binary(), "--clock-control", "none", "--cache-control", "none", "--target-processes", "all",
        "--metrics", METRIC, "--force-overwrite", "--export", str(report), *extra,
    ]  # fmt: skip


def export_csv(report: Path, out: Path) -> int:
    """ncu's raw page of ``report`` as CSV; the number of kernels in it."""
    text = subprocess.run(
        [ncu_binary(), "--import", str(report.with_suffix(".ncu-rep")), "--csv", "--page", "raw",
         "--print-units", "base", "--metrics", f"{METRIC},launch__grid_size,launch__block_size"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    out.write_text(text)
    return max(0, len(text.splitlines()) - 2)  # a header row and a units row


# --- PyTorch --------------------------------------------------------------------------------------


def torch_passes(model_dir: Path, passes: int) -> None:
    """Run under ncu: two warm-up passes, then ``passes`` inside the NVTX range ncu filters on."""
    import torch
    from bench_gpu import token_texts, torch_embedder

    _, ids = token_texts(model_dir, 256, 128, seed=2)
    _, run = torch_embedder(model_dir)

    for _ in range(2):
        run(ids)
    torch.cuda.synchronize()
    for _ in range(passes):
        torch.cuda.nvtx.range_push(RANGE)
        run(ids)
        torch.cuda.nvtx.range_pop()


def profile_torch(model_dir: Path, out: Path, passes: int) -> int:
    report = out / "torch"
    command = [
        *ncu_prefix(report, ["--nvtx", "--nvtx-include", f"{RANGE}/"]),
        sys.executable, __file__, "torch-passes", "--model", str(model_dir), "--passes", str(passes),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=(out / "torch-ncu.log").open("w"))
    return export_csv(report, out / "torch.csv")


# --- TEI ------------------------------------------------------------------------------------------


def profile_tei(model_dir: Path, profile: str, out: Path, texts: int) -> int:
    import requests
    from bench_gpu import token_texts

    from pytei.cache import Cache
    from pytei.config import load_settings
    from pytei.serving.api import router_spec
    from pytei.serving.options import ServeOptions, ServeTarget
    from pytei.serving.ports import reserve_ports

    settings = load_settings(env=os.environ)
    target = ServeTarget(
        model_id=str(model_dir), profile=profile, port="auto",
        router_args=("--dtype", "float16", "--max-batch-tokens", "32768", "--max-client-batch-size", "256",
                     "--max-concurrent-requests", "4096"),
    )  # fmt: skip
    spec = router_spec(target, ServeOptions.from_settings(settings), Cache.from_settings(settings))
    with reserve_ports([("127.0.0.1", None), ("127.0.0.1", None)]) as ports:
        port, metrics_port = ports
    report = out / "tei"
    log = (out / "tei-router.log").open("w")
    child = subprocess.Popen(
        [*ncu_prefix(report), *spec.argv(port, metrics_port)],
        env=spec.environment(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if child.poll() is not None:
                raise SystemExit(
                    f"the router under ncu exited ({child.returncode}): see {out / 'tei-router.log'}"
                )
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the router under ncu was not ready in 900 s")
            time.sleep(1)
        singles, _ = token_texts(model_dir, texts, 128, seed=3)

        def embed(text: str) -> None:
            requests.post(
                f"{url}/embed", json={"inputs": text, "truncate": False}, timeout=600
            ).raise_for_status()

        # all in flight at once: the batcher forms batches of 256 while ncu holds the GPU back
        with ThreadPoolExecutor(max_workers=len(singles)) as pool:
            list(pool.map(embed, singles))
    finally:
        os.killpg(child.pid, signal.SIGINT)
        try:
            child.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        log.close()
    return export_csv(report, out / "tei.csv")


# --- summary --------------------------------------------------------------------------------------


def read_kernels(path: Path) -> list[dict[str, Any]]:
    """One dict per kernel, in launch order: name, grid, block, ns."""
    with path.open() as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("==")))
    units, rows = rows[0], rows[1:]
    if units[METRIC] not in ("nsecond", "ns"):
        raise SystemExit(
            f"{path}: {METRIC} is in {units[METRIC]!r}, not nanoseconds (export with --print-units base)"
        )
    return [
        {"name": r["Kernel Name"], "grid": r.get("launch__grid_size", ""), "block": r.get("launch__block_size", ""),
         "ns": float(r[METRIC].replace(",", ""))}
        for r in rows
    ]  # fmt: skip


def short(name: str) -> str:
    return name.split("(", maxsplit=1)[0].split("<", maxsplit=1)[0].strip()[:60]


def pass_grid(kernels: list[dict[str, Any]]) -> float:
    """A pass's size: the largest grid among its first kernels (the embedding sum's). candle's
    index_select grid follows the tokens, the row-wise kernel of patch 0016 has a fixed one."""
    return max(float(str(k["grid"]).replace(",", "") or 0) for k in kernels[:6])


def tei_passes(kernels: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The router's largest forward passes after its warm-up: the kernel sequence split where
    the embedding lookups (three index_selects: words, positions, types) start a pass, whose grid
    follows the pass's token count.  The warm-up pass (max-batch-tokens in the longest sequences
    the model takes, run before the router listens) is the first of the largest grid: dropped.
    Under ncu the batches of served requests fill less evenly than without it, so passes within
    10% of the largest remaining one count."""
    lookups = [i for i, k in enumerate(kernels) if LOOKUP.search(k["name"])]
    # the three lookups come within a few kernels of each other; with patch 0016 the previous
    # pass's pooling is a row gather too, a few kernels before them: a cluster of three or more
    # gathers ends with a pass's three lookups, the first of which opens the pass
    clusters: list[list[int]] = []
    for i in lookups:
        if clusters and i - clusters[-1][-1] <= 6:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    firsts = [c[-3] for c in clusters if len(c) >= 3]
    passes = [kernels[a:b] for a, b in zip(firsts, [*firsts[1:], len(kernels)], strict=True)]
    if not passes:
        raise SystemExit("no embedding lookup (index_select) among the router's kernels")

    warm_up = max(range(len(passes)), key=lambda i: (pass_grid(passes[i]), -i))
    served = passes[warm_up + 1 :]
    if not served:
        raise SystemExit("no forward pass after the router's warm-up: were the requests served?")
    biggest = max(pass_grid(p) for p in served)
    return [p for p in served if pass_grid(p) >= 0.9 * biggest]


def by_name(passes: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    totals: dict[str, list[float]] = defaultdict(list)
    for p in passes:
        per: dict[str, float] = defaultdict(float)
        for k in p:
            per[short(k["name"])] += k["ns"]
        for name, ns in per.items():
            totals[name].append(ns)
    rows = [
        {"kernel": n, "us_per_pass": round(statistics.median(v) / 1e3, 1),
         "launches_per_pass": round(sum(short(k["name"]) == n for p in passes for k in p) / len(passes), 1)}
        for n, v in totals.items()
    ]  # fmt: skip
    return sorted(rows, key=lambda r: -r["us_per_pass"])


def summarize(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    torch_kernels = read_kernels(out / "torch.csv")
    passes = (
        json.loads((out / "meta.json").read_text())["torch_passes"] if (out / "meta.json").exists() else 3
    )
    per_pass = len(torch_kernels) // passes
    torch_split = [torch_kernels[i * per_pass : (i + 1) * per_pass] for i in range(passes)]
    tei_split = tei_passes(read_kernels(out / "tei.csv"))
    for side, split in (("pytorch", torch_split), ("tei", tei_split)):
        sums = [sum(k["ns"] for k in p) / 1e3 for p in split]
        summary[side] = {
            "passes": len(split),
            "kernels_per_pass": round(statistics.median(len(p) for p in split)),
            "first_grids": sorted({f"{pass_grid(p):,.0f}" for p in split}),
            "kernel_us_per_pass": round(statistics.median(sums), 1),
            "by_kernel": by_name(split),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--profile", required=True)
    run.add_argument("--model", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--texts", type=int, default=1024)
    run.add_argument("--passes", type=int, default=3)
    passes = sub.add_parser("torch-passes")
    passes.add_argument("--model", type=Path, required=True)
    passes.add_argument("--passes", type=int, default=3)
    summary = sub.add_parser("summarize")
    summary.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "torch-passes":
        torch_passes(args.model, args.passes)
    elif args.command == "run":
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "meta.json").write_text(json.dumps({"torch_passes": args.passes}))
        print(f"pytorch: {profile_torch(args.model, args.out, args.passes)} kernels", file=sys.stderr)
        print(f"tei: {profile_tei(args.model, args.profile, args.out, args.texts)} kernels", file=sys.stderr)
        print(json.dumps(summarize(args.out), indent=1))
    else:
        print(json.dumps(summarize(args.out), indent=1))


if __name__ == "__main__":
    main()
