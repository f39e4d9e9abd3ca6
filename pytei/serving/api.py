"""The library entry points of serving: find the router, resolve the model, run it.

- :func:`resolve_router`: the binary to run and its build manifest;
- :func:`router_spec`: a :class:`~pytei.serving.spec.RouterSpec` for a :class:`ServeTarget`;
- :func:`serve_process`: a ready :class:`~pytei.serving.process.ServerProcess`, always stopped;
- :func:`serve` (``pytei.serve``): the same, yielding a connected :class:`pytei.Client`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytei._secrets import read_api_key
from pytei.build.manifest import BuildManifest
from pytei.errors import RouterNotBuiltError
from pytei.serving.backends import Prepared, prepare_backend
from pytei.serving.options import ServeOptions, ServeTarget
from pytei.serving.ports import parse_port

if TYPE_CHECKING:
    from pytei.cache import Cache
    from pytei.client import Client
    from pytei.config import Settings
    from pytei.models.resolve import ModelDir
from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec

__all__ = [
    "RouterBinary",
    "resolve_router",
    "router_spec",
    "serve",
    "serve_process",
    "verify_servers",
]


@dataclass(frozen=True)
class RouterBinary:
    """A router to run, and its build manifest when pytei built it."""

    path: Path
    manifest: BuildManifest | None


def resolve_router(
    options: ServeOptions, cache: Cache, *, binary: Path | None = None, profile: str | None = None
) -> RouterBinary:
    """``binary`` if given, else the ``serve.binary`` setting, else the router `pytei build` installed."""
    from pytei.build.installs import find_router  # noqa: PLC0415 (keeps `import pytei.serving.api` light)

    if binary is None and options.binary:
        binary = Path(options.binary)
    if binary is not None:
        path = binary.expanduser()
        if not path.is_file():
            raise RouterNotBuiltError(
                f"the router binary {path} does not exist", hint="check --binary / serve.binary"
            )
        path = path.resolve()
        found = RouterBinary(path, BuildManifest.find_beside(path))
    else:
        router = find_router(cache, profile or options.profile or None)
        found = RouterBinary(router.binary, router.manifest)
    if found.manifest is not None and found.manifest.device == "cuda":
        from pytei.serving.gpu import require_gpu  # noqa: PLC0415

        require_gpu(f"the router {found.manifest.install_name}")
    return found


def _display_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", Path(model_id.rstrip("/")).name) or "tei"


def router_spec(
    target: ServeTarget, options: ServeOptions, cache: Cache, *, progress: bool = False
) -> RouterSpec:
    """The spec that serves ``target``: the router first (so a missing build is reported before
    any model download), then the model resolved to a checked local directory."""
    from pytei.models.resolve import resolve_model  # noqa: PLC0415 (keeps `import pytei.serving.api` light)

    router = resolve_router(options, cache, binary=target.binary, profile=target.profile)
    chosen = target.model_id or options.default_model
    model = resolve_model(chosen, cache, env=os.environ, progress=progress)
    pooling = target.pooling or model.default_pooling
    user_args = target.router_args or options.router_args
    backend = prepare_for(router, model, pooling, options, cache, user_args)
    return RouterSpec(
        binary=router.path,
        manifest=router.manifest,
        model_dir=backend.model_dir.path,
        model_id=chosen,
        name=target.name or _display_name(chosen),
        hostname=target.hostname or options.hostname,
        port=parse_port(target.port if target.port is not None else options.port),
        pooling=pooling,
        router_args=(*backend.router_args, *user_args),
        env=backend.env,
        api_key=read_api_key(target.api_key, os.environ),
        log_path=target.log_file,
        log_level=target.log_level,
    )


def prepare_for(
    router: RouterBinary,
    model: ModelDir,
    pooling: str | None,
    options: ServeOptions,
    cache: Cache,
    user_args: Sequence[str],
    user_env: dict[str, str] | None = None,
) -> Prepared:
    """What this router's backend needs (ONNX export and ORT threads, CUDA libraries); nothing
    for a router pytei did not build."""
    if router.manifest is None:
        return Prepared(model)
    return prepare_backend(
        model,
        features=router.manifest.features,
        device=router.manifest.device,
        pooling=pooling,
        options=options,
        cache=cache,
        user_args=user_args,
        user_env=user_env,
        build_env=router.manifest.env,
        router=router.manifest.install_name,
    )


def verify_servers(servers: Sequence[ServerProcess]) -> None:
    """After readiness: each pytei-built HTTP router runs on its device and computes finite
    numbers (:func:`pytei.serving.gpu.verify_router`); stopping is the caller's job."""
    from pytei._secrets import bearer_headers  # noqa: PLC0415
    from pytei.serving.gpu import verify_router  # noqa: PLC0415

    for server in servers:
        manifest = server.manifest
        if manifest is None or manifest.transport != "http":
            continue
        verify_router(
            server.url,
            server.log_tail(400),
            device=manifest.device,
            name=server.name,
            log_path=server.log_path,
            headers=bearer_headers(server.spec.api_key),
        )


@contextlib.contextmanager
def serve_process(
    target: ServeTarget,
    settings: Settings | None = None,
    *,
    ready_timeout: float | None = None,
) -> Iterator[ServerProcess]:
    """A ready router serving ``target``, stopped when the block ends, however it ends."""
    from pytei.cache import Cache  # noqa: PLC0415 (keeps `import pytei.serving.api` light)
    from pytei.config import load_settings  # noqa: PLC0415

    settings = settings if settings is not None else load_settings(env=os.environ)
    options = ServeOptions.from_settings(settings)
    spec = router_spec(target, options, Cache.from_settings(settings), progress=sys.stderr.isatty())
    timeout = ready_timeout if ready_timeout is not None else options.ready_timeout
    with ServerProcess(spec, ready_timeout=timeout, stop_timeout=options.stop_timeout) as server:
        verify_servers([server])
        yield server


@contextlib.contextmanager
def serve(
    model_id: str | None = None,
    *,
    port: int | str = "auto",
    hostname: str = "127.0.0.1",
    profile: str | None = None,
    binary: Path | None = None,
    router_args: Sequence[str] = (),
    api_key: str | None = None,
    ready_timeout: float | None = None,
    settings: Settings | None = None,
    log_file: Path | None = None,
) -> Iterator[Client]:
    """Serve ``model_id`` (default: the ``serve.default_model`` setting) and yield a ready Client.

    The router is stopped when the block ends, however it ends.  ``model_id`` may be a local
    directory, a catalogue name or a hub id (resolved to a local snapshot first).  The API key
    defaults to ``PYTEI_API_KEY``; it reaches the router through its environment only.
    """
    from pytei.client import Client  # noqa: PLC0415 (the client package is heavier than serving)

    target = ServeTarget(
        model_id=model_id,
        port=port,
        hostname=hostname,
        profile=profile,
        binary=binary,
        router_args=tuple(router_args),
        api_key=api_key,
        log_file=log_file,
    )
    with (
        serve_process(target, settings, ready_timeout=ready_timeout) as server,
        Client(server.url, api_key=server.spec.api_key or "") as client,
    ):
        yield client
