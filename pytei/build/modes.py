"""Cargo profiles of a build: upstream's ``release``, and pytei's ``--fast`` (``pytei-fast``)."""

from __future__ import annotations

__all__ = [
    "FAST_PROFILE",
    "FAST_PROFILE_SETTINGS",
    "HOT_PACKAGES",
    "PROVIDED_PATH_PACKAGES",
    "profile_config_args",
]

FAST_PROFILE = "pytei-fast"
# Cargo settings of the fast mode: upstream's release profile without link-time optimisation
# and with parallel code generation.  Only the crates on the inference path (tensor ops, matrix
# kernels, tokenizer, JSON, and TEI's candle/ort backends) keep opt-level 3; every other
# dependency (HTTP, gRPC, tracing, TLS, docs, candle-transformers, which TEI uses only for
# nomic's MoE ops) is compiled at opt-level 0, and TEI's router and core crates at 1.  The
# `package."*"` override also outranks `build-override`, so proc macros and build scripts
# stay at 0 as in a release build (at "*"=1 they were compiled optimised, for nothing).
# Workspace crates compile incrementally, so a rebuild after a patch change recompiles only the
# code that changed.  benchmarks/bench_build.py measures build time, memory and throughput.
HOT_PACKAGES = (
    "candle-core", "candle-nn", "gemm", "gemm-common", "gemm-f16", "gemm-f32",
    "gemm-f64", "gemm-c32", "gemm-c64", "pulp", "half", "num-traits", "rayon", "rayon-core",
    "tokenizers", "onig", "onig_sys", "safetensors", "serde_json", "ryu", "ndarray", "ort", "ort-sys",
    "intel-mkl-src", "candle-flash-attn", "candle-layer-norm", "candle-rotary", "candle-cublaslt",
)  # fmt: skip
PROVIDED_PATH_PACKAGES = (
    "candle-core", "candle-nn", "candle-transformers", "candle-kernels", "candle-metal-kernels",
    "candle-flash-attn", "cudarc",
)  # fmt: skip
FAST_PROFILE_SETTINGS = [
    ("inherits", '"release"'),
    ("lto", '"off"'),
    ("codegen-units", "16"),
    ("incremental", "true"),
    ('package."*".opt-level', "0"),
    *((f'package."{name}".opt-level', "3") for name in HOT_PACKAGES),
    *((f'package."{name}".opt-level', "1") for name in ("text-embeddings-router", "text-embeddings-core")),
    # The git sources pytei provides as paths would count as path crates and compile
    # incrementally too, which slows their cold build for nothing: they never change.
    *((f'package."{name}".incremental', "false") for name in PROVIDED_PATH_PACKAGES),
]


def profile_config_args(cargo_profile: str) -> list[str]:
    """``--config`` arguments that define ``cargo_profile`` (none for upstream's own profiles)."""
    if cargo_profile != FAST_PROFILE:
        return []
    args: list[str] = []
    for key, value in FAST_PROFILE_SETTINGS:
        args += ["--config", f"profile.{FAST_PROFILE}.{key}={value}"]
    return args
