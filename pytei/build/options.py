"""The build stage's typed options, read once from the settings (as cibuildwheel's BuildOptions).

:class:`BuildRequest` is *what* to build (profile or features, transport, mode); it comes from
the command line and the ``build.*`` settings.  :class:`BuildOptions` is *how* to build on
this machine (jobs, memory per job, where native libraries and tools come from, the fork
options).  Nothing below the CLI reads :class:`~pytei.config.Settings` for a build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from pytei.build.cuda import FlashCausal, FlashSelection
from pytei.build.manifest import BuildMode, Transport
from pytei.config import Settings
from pytei.errors import ConfigError
from pytei.fork.upstream import ForkOptions

__all__ = ["BuildOptions", "BuildRequest", "CudarcSource"]

CudarcSource = Literal["auto", "mirror", "crates-io"]


def _choice(settings: Settings, key: str, kind: object) -> str:
    value = settings.get_str(key)
    allowed = get_args(kind)
    if value not in allowed:
        raise ConfigError(
            f"setting {key} = {value!r} is not one of {', '.join(map(repr, allowed))}",
            hint=f"set {key} to one of {', '.join(allowed)}",
        )
    return value


def _flash_from_settings(settings: Settings) -> FlashSelection:
    dims: list[int] = []
    for item in settings.get_list("build.flash_attn_head_dims"):
        try:
            dims.append(int(item))
        except ValueError:
            raise ConfigError(
                f"build.flash_attn_head_dims: {item!r} is not a number",
                hint="e.g. --flash-attn-head-dims 32,64",
            ) from None
        if not 0 < dims[-1] <= 256:
            raise ConfigError(f"build.flash_attn_head_dims: {item} is not a head dim flash-attn has (1-256)")
    dtypes = tuple(settings.get_list("build.flash_attn_dtypes"))
    if set(dtypes) - {"fp16", "bf16"}:
        raise ConfigError(f"build.flash_attn_dtypes: {dtypes} must be fp16 and/or bf16")
    causal = _choice(settings, "build.flash_attn_causal", FlashCausal)
    return FlashSelection(
        tuple(sorted(set(dims))), dtypes, "yes" if causal == "yes" else "no" if causal == "no" else "both"
    )


@dataclass(frozen=True)
class BuildRequest:
    """What to build.  Empty ``profile`` and ``features`` mean: detect this machine's profile."""

    profile: str | None = None
    features: tuple[str, ...] = ()
    compute_cap: int | None = None
    transport: Transport | None = None  # None: http unless the features name grpc
    mode: BuildMode = "release"
    native: bool = False
    jobs: int | None = None
    flash: FlashSelection = field(default_factory=FlashSelection)  # CUDA: flash-attention kernels to compile
    engine: bool = False  # the in-process engine (pytei_native) instead of the router

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: Transport | None = None) -> BuildRequest:
        mode: BuildMode = "fast" if _choice(settings, "build.mode", BuildMode) == "fast" else "release"
        return cls(
            profile=settings.get_str("build.profile") or None,
            features=tuple(settings.get_list("build.features")),
            compute_cap=settings.get_int("build.compute_cap") or None,
            transport=transport,
            mode=mode,
            native=settings.get_bool("build.native"),
            jobs=settings.get_int("build.jobs") or None,
            flash=_flash_from_settings(settings),
        )


@dataclass(frozen=True)
class BuildOptions:
    """How builds run here: parallelism, tools and native libraries, and the fork's options."""

    fork: ForkOptions
    jobs: int = 0  # 0: as many as cores and free memory allow
    job_memory_gib: float = 3.0
    cudarc: CudarcSource = "auto"
    protoc: str = ""
    onnxruntime_dir: str = ""
    onnxruntime_version: str = "1.22.1"
    mkl_root: str = ""
    mkl_version: str = "2026.2.0"
    cuda_home: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildOptions:
        chosen = _choice(settings, "build.cudarc", CudarcSource)
        cudarc: CudarcSource = (
            "crates-io" if chosen == "crates-io" else "mirror" if chosen == "mirror" else "auto"
        )
        memory = settings.get_float("build.job_memory_gib")
        if memory <= 0:
            raise ConfigError(f"build.job_memory_gib = {memory} must be positive", hint="e.g. 3.0")
        return cls(
            fork=ForkOptions.from_settings(settings),
            jobs=settings.get_int("build.jobs"),
            job_memory_gib=memory,
            cudarc=cudarc,
            protoc=settings.get_str("build.protoc"),
            onnxruntime_dir=settings.get_str("build.onnxruntime_dir"),
            onnxruntime_version=settings.get_str("build.onnxruntime_version"),
            mkl_root=settings.get_str("build.mkl_root"),
            mkl_version=settings.get_str("build.mkl_version"),
            cuda_home=settings.get_str("build.cuda_home"),
        )
