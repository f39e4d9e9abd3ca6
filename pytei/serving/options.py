"""The serving stage's typed options: what the settings say (:class:`ServeOptions`, read once),
and what to serve (:class:`ServeTarget`, shared by ``pytei serve``, :func:`pytei.serve`, the
services planner and ``pytei bench --serve``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytei.config import Settings
from pytei.errors import ConfigError

__all__ = ["MAX_BATCH_WAIT_US", "ServeOptions", "ServeTarget"]

MAX_BATCH_WAIT_US = 100_000  # patch 0009's wait: beyond 0.1 s it is a delay, not batching


@dataclass(frozen=True)
class ServeOptions:
    """The ``serve.*`` settings (and the config file's ``services:``), read once."""

    hostname: str = "127.0.0.1"
    port: str = "8080"
    ready_timeout: float = 600.0
    stop_timeout: float = 20.0
    default_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    binary: str = ""
    router_args: tuple[str, ...] = ()
    profile: str = ""  # build.profile: whose installed router to run when none is named
    services: tuple[Mapping[str, Any], ...] = ()
    config_file: Path | None = None
    cuda_lib_dirs: tuple[str, ...] = ()
    onnx_export: bool = True
    ort_tuning: str = "auto"
    onnx_quantize: str = ""  # "" (fp32 export) or "int8" (dynamically quantized matmuls)
    batch_wait_us: int = 0  # 0: TEI's own batching (patch 0009 reads TEI_BATCH_WAIT_US)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServeOptions:
        tuning = settings.get_str("serve.ort_tuning")
        if tuning not in ("auto", "upstream"):
            where = settings.setting("serve.ort_tuning").source
            raise ConfigError(
                f"serve.ort_tuning is {tuning!r} ({where})",
                hint="use 'auto' (fit ONNX Runtime to the cores) or 'upstream' (TEI's own)",
            )
        quantize = settings.get_str("serve.onnx_quantize")
        if quantize not in ("", "none", "int8"):
            where = settings.setting("serve.onnx_quantize").source
            raise ConfigError(
                f"serve.onnx_quantize is {quantize!r} ({where})",
                hint="use 'int8' (int8 matmuls, ort routers) or 'none' (fp32)",
            )
        batch_wait_us = settings.get_int("serve.batch_wait_us")
        if not 0 <= batch_wait_us <= MAX_BATCH_WAIT_US:
            where = settings.setting("serve.batch_wait_us").source
            raise ConfigError(
                f"serve.batch_wait_us is {batch_wait_us} ({where})",
                hint=f"use 0 (TEI's own batching) up to {MAX_BATCH_WAIT_US} microseconds; a few hundred suits closed-loop callers",
            )
        return cls(
            hostname=settings.get_str("serve.hostname"),
            port=settings.get_str("serve.port"),
            ready_timeout=settings.get_float("serve.ready_timeout"),
            stop_timeout=settings.get_float("serve.stop_timeout"),
            default_model=settings.get_str("serve.default_model"),
            binary=settings.get_str("serve.binary"),
            router_args=tuple(settings.get_list("serve.router_args")),
            profile=settings.get_str("build.profile"),
            services=settings.services,
            config_file=settings.config_file,
            cuda_lib_dirs=tuple(settings.get_list("serve.cuda_lib_dirs")),
            onnx_export=settings.get_bool("serve.onnx_export"),
            ort_tuning=tuning,
            onnx_quantize="" if quantize == "none" else quantize,
            batch_wait_us=batch_wait_us,
        )


@dataclass(frozen=True)
class ServeTarget:
    """What to serve.  None (or empty) means "not given": the config and settings decide."""

    model_id: str | None = None
    name: str | None = None
    port: str | int | None = None
    hostname: str | None = None
    profile: str | None = None
    binary: Path | None = None
    pooling: str | None = None
    router_args: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    log_file: Path | None = None
    log_level: str | None = None
