"""float16 vs float32 on a CPU router: why `pytei serve` passes --dtype float32 to CPU builds.

Upstream's default dtype is float16 unless ort, mkl or accelerate is compiled in, so a candle-only
CPU router runs float16 on a CPU.  This serves the same model twice with the same router, one
dtype after the other, drives each with `pytei bench` (same workload), and compares them with
`pytei bench compare` (ratios and a noise verdict).

    python benchmarks/bench_cpu_dtype.py [--profile cpu] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pytei.build.installs import find_router
from pytei.cache import Cache
from pytei.config import load_settings
from pytei.models.resolve import packaged_model_dir
from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    settings = load_settings()
    cache = Cache.from_settings(settings)
    binary = find_router(cache, args.profile).binary
    model = packaged_model_dir("all-MiniLM-L6-v2", cache)
    outputs = {}
    for dtype in ("float16", "float32"):
        spec = RouterSpec(
            binary=binary, model_dir=model, name=f"dtype-{dtype}", router_args=("--dtype", dtype)
        )
        out = RESULTS / f"cpu_dtype_{dtype}.json"
        with ServerProcess(spec, ready_timeout=300) as server:
            subprocess.run(
                [sys.executable, "-m", "pytei", "bench", server.url, "--task", "embed", "--batch-size", "4",
                 "--tokens", "32", "--concurrency", "4", "--warmup", "3", "--duration", str(args.seconds),
                 "--output", str(out)],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        outputs[dtype] = out
    compared = subprocess.run(
        [sys.executable, "-m", "pytei", "bench", "compare", str(outputs["float16"]), str(outputs["float32"]), "--json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (RESULTS / "cpu_dtype_compare.json").write_text(compared.stdout)
    table = subprocess.run(
        [sys.executable, "-m", "pytei", "bench", "compare", str(outputs["float16"]), str(outputs["float32"])],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    (RESULTS / "cpu_dtype_compare.md").write_text(
        f"float16 (A) vs float32 (B), {binary.parent.name} router, all-MiniLM-L6-v2, batch 4 x 32 tokens, "
        f"concurrency 4, {args.seconds:g} s each\n\n```\n{table}```\n"
    )
    print(table)
    print(json.dumps(json.loads(compared.stdout), indent=2)[:2000])


if __name__ == "__main__":
    main()
