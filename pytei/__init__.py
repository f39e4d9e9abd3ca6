"""pytei: build, patch, serve, query and benchmark Hugging Face text-embeddings-inference.

from pytei import Client, serve

with serve("all-MiniLM-L6-v2") as tei:          # a ready router, stopped afterwards
    vectors = tei.embed(["a text"]).vectors

with Client("http://127.0.0.1:8080") as tei:     # a router that is already running
    ranking = tei.rerank("query", ["doc a", "doc b"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytei._version import __version__

if TYPE_CHECKING:
    from pytei.client import Client
    from pytei.engine import Engine, hybrid_scores
    from pytei.local import AsyncLocalEngine, LocalEngine
    from pytei.serving.api import serve
    from pytei.serving.process import ServerProcess

__all__ = [
    "AsyncLocalEngine",
    "Client",
    "Engine",
    "LocalEngine",
    "ServerProcess",
    "__version__",
    "hybrid_scores",
    "serve",
]

# Imported on first use, so `import pytei` (and the CLI) stay light.
_LAZY = {
    "Client": "pytei.client",
    "Engine": "pytei.client",
    "hybrid_scores": "pytei.client",
    "serve": "pytei.serving.api",
    "ServerProcess": "pytei.serving.process",
    "LocalEngine": "pytei.local",
    "AsyncLocalEngine": "pytei.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytei' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
