"""benchmarks/gpu_kernels.py's split of the router's kernel trace into forward passes: by the three
embedding lookups that open each pass, whichever kernel performs them (candle's ``is_u32_f16``
before patch 0016, the row-wise ``index_select_rows_*`` after it, which also gathers the pooled
rows a few kernels before the next pass's lookups)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


@functools.cache
def _gpu_kernels() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_kernels", ROOT / "benchmarks" / "gpu_kernels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_kernels", module)
    spec.loader.exec_module(module)
    return module


def _kernel(name: str, grid: str = "1") -> dict[str, Any]:
    return {"name": name, "grid": grid, "block": "256", "ns": 1000.0}


def _encoder(layers: int = 8) -> list[dict[str, Any]]:
    return [_kernel("nvjet_sm90_hsh_128x256_gelubias_TNN", "96") for _ in range(layers)]


def _pass_0016(tokens_grid: str, pooled: bool) -> list[dict[str, Any]]:
    lookup = "void index_select_rows_half2_warp<4>(const __half *, const unsigned int *)"
    kernels = [_kernel(lookup, "1,056") for _ in range(3)] + [_kernel("badd_f16", tokens_grid)]
    kernels += _encoder()
    if pooled:  # the pooling gather, then its batched GEMM and a cast
        kernels += [_kernel(lookup, "1,056"), _kernel("nvjet_sm90_hsh_192x8_NNT"), _kernel("cast_f16_f32")]
    return kernels


def _pass_0013(tokens_grid: str) -> list[dict[str, Any]]:
    lookups = [_kernel("is_u32_f16", tokens_grid) for _ in range(3)]
    return [*lookups, _kernel("badd_f16", tokens_grid), *_encoder(), _kernel("ge_u32"), _kernel("lt_u32")]


def test_passes_of_the_0016_router_start_at_the_lookups_not_at_the_pooling_gather() -> None:
    split = _gpu_kernels().tei_passes
    warm_up = _pass_0016("12,288", pooled=True)
    served = [_pass_0016("11,616", pooled=True), _pass_0016("11,664", pooled=True), _pass_0016("48", pooled=False)]
    trace = [_kernel("copy2d_f16") for _ in range(4)] + warm_up + [k for p in served for k in p]
    passes = split(trace)
    # the warm-up (largest) is dropped, the 1-text pass is below 90% of the largest served one
    assert passes == served[:2]
    assert all("index_select" in p[0]["name"] for p in passes)
    assert all(p[-3]["name"].startswith("void index_select") for p in passes)  # its own pooling gather


def test_passes_of_the_candle_index_select_router_split_as_before() -> None:
    split = _gpu_kernels().tei_passes
    served = [_pass_0013("12,288"), _pass_0013("12,000")]
    trace = _pass_0013("12,288") + [k for p in served for k in p]
    assert split(trace) == served


def test_a_pass_size_is_its_largest_early_grid() -> None:
    pass_grid = _gpu_kernels().pass_grid
    assert pass_grid(_pass_0016("11,616", pooled=True)) == 11616.0
    assert pass_grid(_pass_0013("7,056")) == 7056.0
