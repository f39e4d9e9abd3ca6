"""Planning named services: which routers one ``pytei serve`` starts (the ``services:`` of a
config, or the one the flags describe; one per GPU with ``--gpus``), on which ports, with which
model.  :mod:`pytei.serving.supervisor` starts and watches them; :mod:`pytei.serving.state` has
their state files (``pytei ps`` / ``pytei stop``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytei._secrets import read_api_key
from pytei.cache import Cache
from pytei.errors import ConfigError
from pytei.models.resolve import ModelDir, resolve_model
from pytei.serving.api import RouterBinary, prepare_for, resolve_router
from pytei.serving.options import ServeOptions, ServeTarget
from pytei.serving.ports import PortRequest, parse_port
from pytei.serving.spec import RouterSpec

__all__ = ["plan_services"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# --- planning: which routers, on which ports -------------------------------------------------


def _service_name(model_id: str) -> str:
    base = Path(model_id.rstrip("/")).name or "tei"
    return re.sub(r"[^A-Za-z0-9._-]", "-", base).lstrip(".-_") or "tei"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"service name {name!r} is not usable", hint="use letters, digits, '.', '_' and '-' (at most 64)"
        )
    return name


def _as_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list | tuple) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{what} must be a list, got {value!r}")


def _relative_to_config(entry: Mapping[str, Any], config_file: Path | None) -> Mapping[str, Any]:
    """``./model`` or ``../bin/router`` in a config file mean next to that file, not the cwd."""
    if config_file is None:
        return entry
    fixed = dict(entry)
    for key in ("model_id", "binary"):
        value = fixed.get(key)
        if isinstance(value, str) and value.startswith(("./", "../")):
            fixed[key] = str((config_file.parent / value).resolve())
    return fixed


def _log_path(cache: Cache, name: str, log_file: Path | None, several: bool) -> Path:
    if log_file is None:
        # Not created here: a start that fails before the launch leaves no directory behind.
        return cache.root / "services" / name / "router.log"
    if not several:
        return log_file.expanduser()
    # One --log-file for several routers: one file each, named after the service.
    path = log_file.expanduser()
    return path.with_name(f"{path.stem}.{name}{path.suffix or '.log'}")


def plan_services(
    target: ServeTarget, options: ServeOptions, cache: Cache, *, progress: bool = False
) -> list[RouterSpec]:
    """The routers to start: one per service (``services:`` in the config, or the one the flags
    describe), one per GPU when GPUs are listed, on consecutive ports from the base port.

    Models are resolved to checked local directories here, before anything is launched.
    """
    flag_service = target.model_id is not None or not options.services
    entries: list[Mapping[str, Any]]
    if flag_service:
        entries = [{"model_id": target.model_id or options.default_model}]
        if target.name:
            entries[0] = {**entries[0], "name": target.name}
    else:
        entries = [_relative_to_config(entry, options.config_file) for entry in options.services]

    base_port = parse_port(target.port if target.port is not None else options.port)
    next_port = base_port
    models: dict[str, ModelDir] = {}
    binaries: dict[tuple[str, str], RouterBinary] = {}
    api_key = read_api_key(target.api_key, os.environ)
    planned: list[RouterSpec] = []
    # Routers first: a missing build is reported before any model is downloaded.
    binary_keys: list[tuple[str, str]] = []
    for entry in entries:
        binary_given = entry.get("binary") or target.binary
        key = (str(binary_given or ""), str(entry.get("profile") or target.profile or ""))
        if key not in binaries:
            binaries[key] = resolve_router(
                options, cache, binary=Path(key[0]) if key[0] else None, profile=key[1] or None
            )
        binary_keys.append(key)
    for index, entry in enumerate(entries):
        model_id = str(entry.get("model_id") or options.default_model)
        name = _check_name(
            str(entry.get("name") or (_service_name(model_id) if flag_service else f"service-{index}"))
        )
        gpus = list(target.gpus) or _as_list(entry.get("gpus"), f"services[{index}].gpus")
        if "port" in entry:
            port: PortRequest = parse_port(entry["port"])
        else:
            port = next_port
        if port is not None and base_port is not None and "port" not in entry:
            next_port = port + max(len(gpus), 1)

        if model_id not in models:
            models[model_id] = resolve_model(model_id, cache, env=os.environ, progress=progress)
        key = binary_keys[index]
        router_args = tuple(_as_list(entry.get("router_args"), f"services[{index}].router_args")) or (
            target.router_args or options.router_args
        )
        extra_env = entry.get("env") or {}
        if not isinstance(extra_env, Mapping):
            raise ConfigError(f"services[{index}].env must be a mapping of variables")
        pooling = str(entry.get("pooling") or target.pooling or "") or models[model_id].default_pooling
        service_env = {str(k): str(v) for k, v in extra_env.items()}
        backend = prepare_for(
            binaries[key], models[model_id], pooling, options, cache, router_args, service_env
        )
        for copy, gpu in enumerate(gpus or [None]):
            spec = RouterSpec(
                binary=binaries[key].path,
                manifest=binaries[key].manifest,
                model_dir=backend.model_dir.path,
                model_id=model_id,
                name=_check_name(f"{name}-gpu{gpu}") if gpu is not None else name,
                hostname=str(entry.get("hostname") or target.hostname or options.hostname),
                port=None if port is None else port + copy,
                pooling=pooling,
                router_args=(*backend.router_args, *router_args),
                env=backend.env | service_env | ({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}),
                api_key=api_key,
                group=name,
                log_level=target.log_level,
            )
            planned.append(spec)
    names = [spec.name for spec in planned]
    if len(set(names)) != len(names):
        raise ConfigError("two routers would have the same name", hint="give each service its own name")
    several = len(planned) > 1
    return [replace(spec, log_path=_log_path(cache, spec.name, target.log_file, several)) for spec in planned]
