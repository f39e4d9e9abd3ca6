"""What a benchmark ran against: the router's ``/info``, its build manifest, and ``--serve``.

``--serve`` starts the router through ``pytei.serving.process.serve`` (imported only when asked for)
and records the manifest that ``pytei build`` wrote beside the binary it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from pytei.config import Settings
from pytei.errors import BenchError, PyteiError

__all__ = ["ServedRouter", "fetch_info", "find_manifest", "load_manifest", "serve_router"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


def fetch_info(url: str, *, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Any] | None:
    """``GET /info``; None when the server answers but is not a TEI router."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = requests.get(f"{url.rstrip('/')}/info", headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise BenchError(
            f"cannot reach {url}: {exc.__class__.__name__}",
            hint="start a router (`pytei serve`) or let the benchmark start one with --serve",
        ) from exc
    if response.status_code == 401:
        raise BenchError(
            f"{url} wants an API key (401 from /info)",
            hint="set PYTEI_API_KEY (or --api-key) to the router's --api-key",
        )
    if response.status_code != 200:
        logger.warning("%s/info answered %s: not recording the model", url, response.status_code)
        return None
    try:
        info = response.json()
    except ValueError:
        logger.warning("%s/info is not JSON: not a TEI router? not recording the model", url)
        return None
    if not isinstance(info, dict) or "model_id" not in info:
        logger.warning("%s/info does not look like TEI's: not recording the model", url)
        return None
    return info


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read the build manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchError(f"the build manifest {path} is not a JSON object")
    return data


def find_manifest(binary: Path | None, *, profile: str | None, settings: Settings) -> Path | None:
    """The manifest beside the router binary that ``pytei serve`` would run, if pytei built it."""
    if binary is None and settings.get_str("serve.binary"):
        binary = Path(settings.get_str("serve.binary"))
    if binary is not None:
        candidate = binary.expanduser().resolve().parent / MANIFEST_NAME
        return candidate if candidate.is_file() else None
    from pytei.build.installs import find_router  # noqa: PLC0415
    from pytei.cache import Cache  # noqa: PLC0415 - only --serve needs the cache

    try:
        router = find_router(
            Cache.from_settings(settings), profile or settings.get_str("build.profile") or None
        )
    except PyteiError:
        return None
    return router.manifest_path


@dataclass(frozen=True)
class ServedRouter:
    url: str
    model_id: str | None
    manifest_path: Path | None
    manifest: Mapping[str, Any] | None = field(default=None)


@contextlib.contextmanager
def serve_router(
    *,
    model_id: str | None,
    settings: Settings,
    profile: str | None = None,
    binary: Path | None = None,
    router_args: Sequence[str] = (),
    api_key: str | None = None,
) -> Iterator[ServedRouter]:
    """Start a router with ``pytei serve``'s machinery for the benchmark, stop it afterwards."""
    try:
        server = importlib.import_module("pytei.serving.process")
    except ModuleNotFoundError as exc:
        if exc.name != "pytei.serving.process":
            raise
        raise BenchError(
            "--serve needs pytei.serving.process, which this installation does not have",
            hint="start the router with `pytei serve` and give its URL",
        ) from exc
    manifest_path = find_manifest(binary, profile=profile, settings=settings)
    with server.serve(
        model_id,
        port="auto",
        hostname="127.0.0.1",
        profile=profile,
        binary=binary,
        router_args=tuple(router_args),
        api_key=api_key,
        settings=settings,
    ) as client:
        found = getattr(client, "binary", None)
        if isinstance(found, Path) and (found.parent / MANIFEST_NAME).is_file():
            manifest_path = found.parent / MANIFEST_NAME
        manifest = load_manifest(manifest_path) if manifest_path is not None else None
        yield ServedRouter(str(client.base_url), model_id, manifest_path, manifest)
