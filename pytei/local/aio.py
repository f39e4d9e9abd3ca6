"""``AsyncLocalEngine``: :class:`LocalEngine`'s methods as coroutines for asyncio services.

The native engine releases the GIL while it works, so each call runs on a worker thread
(``asyncio.to_thread``) without blocking the event loop, and concurrent awaits are batched
together by TEI's queue like concurrent HTTP requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Self

from pytei.engine.protocol import PredictInput, Texts
from pytei.engine.types import (
    Embeddings,
    Info,
    Predictions,
    Ranking,
    Similarities,
    SparseEmbeddings,
    Token,
    TokenEmbeddings,
)
from pytei.local.engine import LocalEngine

__all__ = ["AsyncLocalEngine"]


class AsyncLocalEngine:
    """``await AsyncLocalEngine.load(model, **options)``, then ``await engine.embed(...)``."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    @classmethod
    async def load(cls, model_id: str | None = None, **options: Any) -> AsyncLocalEngine:
        """Load off the event loop (loading a model takes seconds)."""
        return cls(await asyncio.to_thread(LocalEngine, model_id, **options))

    async def embed(self, texts: Texts, **options: Any) -> Embeddings:
        return await asyncio.to_thread(self.engine.embed, texts, **options)

    async def embed_all(self, texts: Texts, **options: Any) -> TokenEmbeddings:
        return await asyncio.to_thread(self.engine.embed_all, texts, **options)

    async def embed_sparse(self, texts: Texts, **options: Any) -> SparseEmbeddings:
        return await asyncio.to_thread(self.engine.embed_sparse, texts, **options)

    async def similarity(self, source: str, sentences: Sequence[str], **options: Any) -> Similarities:
        return await asyncio.to_thread(self.engine.similarity, source, sentences, **options)

    async def rerank(self, query: str, texts: Sequence[str], **options: Any) -> Ranking:
        return await asyncio.to_thread(self.engine.rerank, query, texts, **options)

    async def predict(
        self, inputs: PredictInput | list[PredictInput], **options: Any
    ) -> Predictions | list[Predictions]:
        def call() -> Predictions | list[Predictions]:
            return self.engine.predict(inputs, **options)

        return await asyncio.to_thread(call)

    async def tokenize(self, texts: Texts, **options: Any) -> list[list[Token]]:
        return await asyncio.to_thread(self.engine.tokenize, texts, **options)

    async def decode(self, ids: Sequence[int] | Sequence[Sequence[int]], **options: Any) -> list[str]:
        return await asyncio.to_thread(self.engine.decode, ids, **options)

    async def health(self) -> bool:
        return await asyncio.to_thread(self.engine.health)

    def info(self) -> Info:
        return self.engine.info()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
