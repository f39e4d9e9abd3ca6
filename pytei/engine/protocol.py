"""The interface that the HTTP :class:`~pytei.client.Client` and the in-process engine share.

Code typed against :class:`Engine` runs unchanged on either: same method names, same
keyword-only options with the same defaults, same result types (:mod:`pytei.engine.types`).
What only HTTP has (``openai_embed``, ``metrics``, ``token_texts``, progress bars, retries)
stays off the protocol.

Input conventions (the engine must follow them too):
- texts: one ``str`` or a sequence of them; results always hold one row per text, so a
  single text gives ``len(result) == 1``;
- ``truncate=None`` means the server's default (``--auto-truncate``), ``truncation_direction``
  is ``"left"``/``"right"`` (None: right);
- ``predict`` takes a text, a pair ``(a, b)``, or a *list* of texts and pairs; the first two
  give one :class:`Predictions`, a list gives a list of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, overload, runtime_checkable

from pytei.engine.types import (
    Embeddings,
    Info,
    Predictions,
    Ranking,
    Similarities,
    SparseEmbeddings,
    Token,
    TokenEmbeddings,
    TruncationDirection,
)

__all__ = ["Engine", "PredictInput", "Texts"]

Texts = str | Sequence[str]
PredictInput = str | tuple[str, str]


@runtime_checkable
class Engine(Protocol):
    """Everything both back-ends answer.  ``isinstance(x, Engine)`` checks method names only;
    ``mypy`` checks the signatures."""

    def embed(
        self,
        texts: Texts,
        *,
        normalize: bool = True,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
    ) -> Embeddings: ...

    def embed_all(
        self,
        texts: Texts,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
    ) -> TokenEmbeddings: ...

    def embed_sparse(
        self,
        texts: Texts,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
    ) -> SparseEmbeddings: ...

    def rerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
        return_text: bool = False,
        top_n: int | None = None,
    ) -> Ranking: ...

    @overload
    def predict(
        self,
        inputs: PredictInput,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
    ) -> Predictions: ...

    @overload
    def predict(
        self,
        inputs: list[PredictInput],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
    ) -> list[Predictions]: ...

    def similarity(
        self,
        source: str,
        sentences: Sequence[str],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
    ) -> Similarities: ...

    def tokenize(
        self,
        texts: Texts,
        *,
        add_special_tokens: bool = True,
        prompt_name: str | None = None,
    ) -> list[list[Token]]: ...

    def decode(
        self,
        ids: Sequence[int] | Sequence[Sequence[int]],
        *,
        skip_special_tokens: bool = True,
    ) -> list[str]: ...

    def info(self) -> Info: ...

    def health(self) -> bool: ...
