"""What a benchmark ran against: the router's ``/info``, its build manifest, and ``--serve``.

``--serve`` starts the router through :func:`pytei.serving.api.serve_process` (imported
only when asked for) and records the :class:`~pytei.build.manifest.BuildManifest` of the
router it runs, as the server process knows it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from pytei._secrets import bearer_headers
from pytei.build.manifest import BuildManifest
from pytei.config import Settings
from pytei.errors import BenchError

if TYPE_CHECKING:
    from pytei.serving.options import ServeTarget

__all__ = ["ServedRouter", "fetch_info", "serve_router"]

logger = logging.getLogger(__name__)


def fetch_info(url: str, *, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Any] | None:
    """``GET /info``; None when the server answers but is not a TEI router."""
    headers = bearer_headers(api_key)
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


@dataclass(frozen=True)
class ServedRouter:
    url: str
    model_id: str | None
    manifest: BuildManifest | None


@contextlib.contextmanager
def serve_router(target: ServeTarget, settings: Settings) -> Iterator[ServedRouter]:
    """Start a router with ``pytei serve``'s machinery for the benchmark, stop it afterwards."""
    try:
        process = importlib.import_module("pytei.serving.api")
    except ModuleNotFoundError as exc:
        if exc.name != "pytei.serving.api":
            raise
        raise BenchError(
            "--serve needs pytei.serving.api, which this installation does not have",
            hint="start the router with `pytei serve` and give its URL",
        ) from exc
    with process.serve_process(target, settings) as server:
        yield ServedRouter(str(server.url), target.model_id, server.manifest)
