"""What a router's backend needs from pytei before it starts, decided from its build manifest.

- ONNX Runtime routers (``ort`` feature): a safetensors model is served through an ONNX export
  (:func:`pytei.models.for_ort.onnx_for_ort`), and the thread pools, batch size and tokenizer
  workers fit the cores present (patch 0006 reads them; TEI's own choice is ORT's default pools,
  batches of 8 and one tokenizer per core but one, which on 2 cores is one thread too many).
- Any router: how long a batch waits for the callers just answered (``serve.batch_wait_us``,
  patch 0009), so closed-loop callers share forward passes.
- CUDA routers: the CUDA 13 libraries under the names cudarc loads, the JIT cache, and a check
  that a build with only some flash-attention kernels has the one the model needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pytei.build.hardware import detect_machine
from pytei.build.toolchain import cpu_count
from pytei.cache import Cache
from pytei.errors import ConfigError
from pytei.models.resolve import ModelDir
from pytei.serving.options import ServeOptions
from pytei.serving.spec import flag_value

__all__ = ["BATCH_WAIT_ENV", "Prepared", "int8_note", "ort_tuning", "prepare_backend"]

BATCH_WAIT_ENV = "TEI_BATCH_WAIT_US"  # patch 0009: how long a batch waits for answered callers

log = logging.getLogger("pytei.serve")


@dataclass(frozen=True)
class Prepared:
    model_dir: ModelDir
    env: dict[str, str] = field(default_factory=dict)
    router_args: tuple[str, ...] = ()  # added before the user's own
    notes: tuple[str, ...] = ()


def ort_tuning(cores: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """ORT's thread pools and TEI's batching for ``cores`` CPUs, as measured on 2 cores
    (benchmarks/bench_cpu_peers.py, all-MiniLM-L6-v2, batches of 32 over HTTP): one intra-op
    thread per core and one inter-op thread; whole client batches of up to 32 texts in one ORT
    run instead of TEI's 8; one tokenization worker per four cores (tokenizing is a few percent
    of the work, and each worker is one more thread on the cores).  ORT's spinning stays on:
    idle threads that spin answered single texts in 4.2 ms p50 against 5.5 ms without
    (fastembed: 3.3 ms) and carried 4% more texts/s, for a p99 of 7.2 ms against 6.3."""
    env = {
        "TEI_ORT_INTRA_THREADS": str(cores),
        "TEI_ORT_INTER_THREADS": "1",
        "TEI_ORT_MAX_BATCH_SIZE": "32",
    }
    return env, ("--tokenization-workers", str(max(1, cores // 4)))


def int8_note(instructions: str | None) -> str:
    """What int8 matmuls buy on this CPU (benchmarks/bench_cpu_int8.py measured a VNNI CPU)."""
    if instructions is None:
        return (
            "int8 matmuls without int8 dot-product instructions (VNNI, ARM dot product) are rarely "
            "faster than fp32 on this CPU; serve fp32 unless memory limits you"
        )
    return f"int8 matmuls on {instructions}"


def _given(args: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def prepare_backend(
    model: ModelDir,
    *,
    features: Sequence[str],
    device: str,
    pooling: str | None,
    options: ServeOptions,
    cache: Cache,
    user_args: Sequence[str] = (),
    user_env: dict[str, str] | None = None,
    build_env: Mapping[str, str] | None = None,
    router: str = "",
) -> Prepared:
    """The model directory, environment and router arguments this router's backend needs;
    ``build_env`` (the manifest's) says which flash-attention kernels a CUDA router has."""
    env: dict[str, str] = {}
    args: list[str] = []
    notes: list[str] = []
    served = model
    quantize = options.onnx_quantize or None
    if quantize and ("ort" not in features or not options.onnx_export):
        raise ConfigError(
            f"int8 quantization (serve.onnx_quantize={quantize}) needs an ort router that exports the model",
            hint="serve with an ort profile (pytei build --profile ort) and serve.onnx_export on, or drop --quantize",
        )
    if "ort" in features:
        if options.onnx_export:
            from pytei.models.for_ort import onnx_for_ort  # noqa: PLC0415 (only for ort routers)
            from pytei.models.resolve import inspect_model_dir  # noqa: PLC0415

            choice = onnx_for_ort(model, cache, pooling=pooling, quantize="int8" if quantize else None)
            served = inspect_model_dir(choice.directory) if choice.exported else model
            notes.append(choice.note)
            if quantize and choice.exported:
                notes.append(int8_note(detect_machine(gpu_query=lambda env, notes: ()).int8_dot))
        if options.ort_tuning == "auto":
            tuned, tuned_args = ort_tuning(cpu_count())
            env.update({k: v for k, v in tuned.items() if k not in (user_env or {}) and k not in os.environ})
            if not _given(user_args, "--tokenization-workers"):
                args.extend(tuned_args)
    if device == "cuda":
        from pytei.serving.flash import check_flash_kernels  # noqa: PLC0415 (only for CUDA routers)
        from pytei.serving.gpu import cuda_runtime_env  # noqa: PLC0415

        dtype = flag_value(user_args, "--dtype") or "float16"  # TEI's default on CUDA
        check_flash_kernels(model, build_env=build_env or {}, dtype=dtype, router=router)

        env.update(cuda_runtime_env(cache, os.environ, options.cuda_lib_dirs))
    if options.batch_wait_us and BATCH_WAIT_ENV not in (user_env or {}) and BATCH_WAIT_ENV not in os.environ:
        env[BATCH_WAIT_ENV] = str(options.batch_wait_us)
    return Prepared(served, env, tuple(args), tuple(notes))
