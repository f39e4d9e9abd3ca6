"""Named services: several routers from one config (or one per GPU), started all or nothing and
supervised.  Their state files (``pytei ps`` / ``pytei stop``) are :mod:`pytei.serving.state`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from pytei._secrets import read_api_key
from pytei.cache import Cache
from pytei.errors import ConfigError
from pytei.models.resolve import ModelDir, resolve_model
from pytei.serving.api import RouterBinary, resolve_router
from pytei.serving.options import ServeOptions, ServeTarget
from pytei.serving.ports import PortRequest, parse_port, reserve_ports
from pytei.serving.process import ServerProcess, stop_all, wait_all_ready
from pytei.serving.spec import RouterSpec
from pytei.serving.state import ServiceState, list_services, remove_state, write_state

__all__ = ["plan_services", "start_services", "supervise"]

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
        return cache.area("services", name) / "router.log"
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
        for copy, gpu in enumerate(gpus or [None]):
            spec = RouterSpec(
                binary=binaries[key].path,
                manifest=binaries[key].manifest,
                model_dir=models[model_id].path,
                model_id=model_id,
                name=_check_name(f"{name}-gpu{gpu}") if gpu is not None else name,
                hostname=str(entry.get("hostname") or target.hostname or options.hostname),
                port=None if port is None else port + copy,
                pooling=str(entry.get("pooling") or target.pooling or "") or None,
                router_args=router_args,
                env={str(k): str(v) for k, v in extra_env.items()}
                | ({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}),
                api_key=api_key,
            )
            planned.append(spec)
    names = [spec.name for spec in planned]
    if len(set(names)) != len(names):
        raise ConfigError("two routers would have the same name", hint="give each service its own name")
    several = len(planned) > 1
    return [replace(spec, log_path=_log_path(cache, spec.name, target.log_file, several)) for spec in planned]


# --- starting and supervising ----------------------------------------------------------------


def start_services(
    specs: Sequence[RouterSpec],
    *,
    cache: Cache | None,
    detach: bool = False,
    ready_timeout: float,
    stop_timeout: float,
    log_stream: TextIO | None = None,
    cancel: threading.Event | None = None,
    on_launch: Callable[[ServerProcess], None] | None = None,
) -> list[ServerProcess]:
    """Start every router and wait until all are ready: all or nothing.

    The routers are launched one after the other from this thread (see _Spawner in
    pytei.serving.process) and become ready concurrently.  If one fails, the others are stopped and its
    error is raised.  With ``cache``, state files make them visible to ``pytei ps``/``stop``.
    """
    ports = [(spec.hostname, spec.port) for spec in specs] + [
        (spec.hostname, spec.prometheus_port) for spec in specs
    ]
    with reserve_ports(ports) as chosen:
        pass  # all distinct; released just before the routers bind them
    count = len(specs)
    specs = [replace(spec, port=chosen[i], prometheus_port=chosen[count + i]) for i, spec in enumerate(specs)]
    prefix = count > 1
    servers = [
        ServerProcess(
            spec,
            ready_timeout=ready_timeout,
            stop_timeout=stop_timeout,
            detach=detach,
            log_stream=log_stream,
            log_prefix=f"[{spec.name}] " if prefix else "",
        )
        for spec in specs
    ]
    mode = "detached" if detach else "foreground"
    try:
        with cache.lock("services", timeout=30) if cache is not None else contextlib.nullcontext():
            if cache is not None:
                running = {state.name: state for state in list_services(cache)}
                for spec in specs:
                    if spec.name in running:
                        raise ConfigError(
                            f"a service named {spec.name!r} is already running (pid {running[spec.name].pid})",
                            hint=f"stop it with `pytei stop {spec.name}`, or pass --name",
                        )
                    # Logs from the previous run of this name would confuse the tail shown on failure.
                    if (
                        spec.log_path is not None
                        and spec.log_path.parent == cache.root / "services" / spec.name
                    ):
                        with contextlib.suppress(FileNotFoundError):
                            spec.log_path.unlink()
            for server in servers:
                server.start()
                if on_launch is not None:
                    on_launch(server)
                if cache is not None:
                    write_state(cache, ServiceState.of(server, mode=mode, status="starting"))
        wait_all_ready(servers, timeout=ready_timeout, cancel=cancel)
    except BaseException:
        stop_all(servers, timeout=stop_timeout)
        if cache is not None:
            for server in servers:
                if server.started_at is not None:
                    remove_state(cache, server.name, pid=server.pid)
        raise
    if cache is not None:
        for server in servers:
            write_state(cache, ServiceState.of(server, mode=mode, status="ready"))
    if detach:
        for server in servers:
            server.release()
    return servers


def supervise(
    servers: Sequence[ServerProcess],
    *,
    cancel: threading.Event,
    hurry: threading.Event | None = None,
    cache: Cache | None = None,
    interval: float = 0.2,
) -> None:
    """Watch ready routers until ``cancel`` is set (then stop them all) or one dies (then stop
    the others and raise its :class:`~pytei.errors.ServerExitedError`)."""
    try:
        while not cancel.wait(interval):
            for server in servers:
                server.check_alive()
    finally:
        stop_all(servers, hurry=hurry)
        if cache is not None:
            for server in servers:
                remove_state(cache, server.name, pid=server.pid)
