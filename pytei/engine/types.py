"""Result types shared by the HTTP :class:`~pytei.client.Client` and the in-process engine.

Frozen dataclasses: a result never changes after it is returned.  Arrays are numpy
(dense vectors always float32, shape ``[n, dim]``, even for one text, as TEI answers).
Classes holding arrays compare by identity (``eq=False``): element-wise ``==`` on arrays is
not a bool, so a generated ``__eq__`` would be wrong.

Every result of a route that sends TEI's ``x-*`` headers carries a :class:`Timing`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "Embeddings",
    "Info",
    "ModelKind",
    "OpenAIEmbeddings",
    "Prediction",
    "Predictions",
    "RerankResult",
    "Ranking",
    "Similarities",
    "SparseEmbedding",
    "SparseEmbeddings",
    "Timing",
    "Token",
    "TokenEmbeddings",
    "TruncationDirection",
    "VocabLike",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
TruncationDirection = Literal["left", "right"]
ModelKind = Literal["embedding", "splade", "reranker", "classifier"]


# --- timing ----------------------------------------------------------------------------------


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # a proxy rewrote it; timing is informative, never worth failing a call


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _header_float(headers, name)
    return None if value is None else int(value)


@dataclass(frozen=True)
class Timing:
    """TEI's ``x-*`` response headers, in milliseconds (None when the header was absent).

    ``tokenization_ms``, ``queue_ms`` and ``inference_ms`` are per-input averages (TEI divides
    by the batch size); ``total_ms``/``compute_ms`` are the request's wall time on the server.
    When a call was split into several HTTP requests, ``requests`` says how many: characters,
    tokens and the totals are summed over them, and the per-input averages are averaged,
    weighted by each request's input count.
    """

    compute_type: str | None = None
    compute_ms: float | None = None
    compute_characters: int | None = None
    compute_tokens: int | None = None
    total_ms: float | None = None
    tokenization_ms: float | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None
    requests: int = 1

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Timing:
        """Read the headers of one response (a case-insensitive mapping, as requests gives)."""
        return cls(
            compute_type=headers.get("x-compute-type"),
            compute_ms=_header_float(headers, "x-compute-time"),
            compute_characters=_header_int(headers, "x-compute-characters"),
            compute_tokens=_header_int(headers, "x-compute-tokens"),
            total_ms=_header_float(headers, "x-total-time"),
            tokenization_ms=_header_float(headers, "x-tokenization-time"),
            queue_ms=_header_float(headers, "x-queue-time"),
            inference_ms=_header_float(headers, "x-inference-time"),
        )

    @classmethod
    def merge(cls, parts: Sequence[tuple[Timing, int]]) -> Timing:
        """Combine the timings of several requests; each part is (timing, number of inputs)."""
        if len(parts) == 1:
            return parts[0][0]

        def total(get: Callable[[Timing], float | None]) -> float | None:
            values = [v for t, _ in parts if (v := get(t)) is not None]
            return sum(values) if values else None

        def average(get: Callable[[Timing], float | None]) -> float | None:
            pairs = [(v, n) for t, n in parts if (v := get(t)) is not None]
            weight = sum(n for _, n in pairs)
            return sum(v * n for v, n in pairs) / weight if weight else None

        characters = total(lambda t: t.compute_characters)
        tokens = total(lambda t: t.compute_tokens)
        return cls(
            compute_type=next((t.compute_type for t, _ in parts if t.compute_type), None),
            compute_ms=total(lambda t: t.compute_ms),
            compute_characters=None if characters is None else int(characters),
            compute_tokens=None if tokens is None else int(tokens),
            total_ms=total(lambda t: t.total_ms),
            tokenization_ms=average(lambda t: t.tokenization_ms),
            queue_ms=average(lambda t: t.queue_ms),
            inference_ms=average(lambda t: t.inference_ms),
            requests=sum(t.requests for t, _ in parts),
        )


# --- dense -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Pooled embeddings, one row per input text, float32 ``[n, dim]``."""

    vectors: FloatArray
    timing: Timing = field(default_factory=Timing)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __getitem__(self, index: int) -> FloatArray:
        row: FloatArray = self.vectors[index]
        return row

    def __iter__(self) -> Iterator[FloatArray]:
        return iter(self.vectors)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        # lets np.asarray(result) and numpy functions take the result directly
        if dtype is None:
            return self.vectors
        return self.vectors.astype(dtype)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True, eq=False)
class OpenAIEmbeddings(Embeddings):
    """``/v1/embeddings``: the vectors plus what the OpenAI shape adds (model, token usage)."""

    model: str = ""
    prompt_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, eq=False)
class TokenEmbeddings:
    """``/embed_all``: one float32 ``[tokens_i, dim]`` array per input (lengths differ)."""

    vectors: tuple[FloatArray, ...]
    timing: Timing = field(default_factory=Timing)

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, index: int) -> FloatArray:
        return self.vectors[index]

    def __iter__(self) -> Iterator[FloatArray]:
        return iter(self.vectors)


@dataclass(frozen=True, eq=False)
class Similarities:
    """``/similarity``: cosine similarity of the source sentence to each sentence, in order."""

    scores: FloatArray
    timing: Timing = field(default_factory=Timing)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: int) -> float:
        return float(self.scores[index])

    def __iter__(self) -> Iterator[float]:
        return (float(s) for s in self.scores)


# --- sparse ----------------------------------------------------------------------------------


class _TokenizerLike(Protocol):
    """What :meth:`SparseEmbedding.to_dict` needs of a ``tokenizers.Tokenizer``."""

    def id_to_token(self, id: int, /) -> str | None: ...


VocabLike = _TokenizerLike | Mapping[int, str] | Callable[[Sequence[int]], Sequence[str]]
"""How to turn vocabulary ids into token strings: a ``tokenizers.Tokenizer``, a mapping
id -> token, or a function of a list of ids returning their tokens in order (such as
:meth:`pytei.Client.token_texts`, which asks the router's ``/decode``)."""


def _lookup_tokens(vocab: VocabLike, ids: Sequence[int]) -> list[str]:
    if hasattr(vocab, "id_to_token"):
        tokens: list[str] = []
        for i in ids:
            token = vocab.id_to_token(i)
            if token is None:
                raise KeyError(f"token id {i} is not in the tokenizer's vocabulary")
            tokens.append(token)
        return tokens
    if isinstance(vocab, Mapping):
        return [vocab[i] for i in ids]
    result = list(vocab(ids))
    if len(result) != len(ids):
        raise ValueError(f"the vocabulary function returned {len(result)} tokens for {len(ids)} ids")
    return result


@dataclass(frozen=True, eq=False)
class SparseEmbedding:
    """One SPLADE vector: vocabulary ``indices`` (int64, ascending) and float32 ``values``.

    Only non-zero weights are kept, as TEI sends them.
    """

    indices: IntArray
    values: FloatArray

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to_dict(self, vocab: VocabLike) -> dict[str, float]:
        """``{token: weight}``.  ``vocab`` names the tokens (see :data:`VocabLike`).

        A ``tokenizers.Tokenizer`` gives the raw vocabulary strings (``"##ing"``), which are
        unique; a router's ``/decode`` (``client.token_texts``) gives what decoding each id
        alone prints, which can map two ids to one string: their weights are then added.
        """
        tokens = _lookup_tokens(vocab, [int(i) for i in self.indices])
        out: dict[str, float] = {}
        for token, value in zip(tokens, self.values.tolist(), strict=True):
            out[token] = out.get(token, 0.0) + value
        return out

    def to_dense(self, vocab_size: int) -> FloatArray:
        """A float32 ``[vocab_size]`` vector with zeros where TEI sent nothing."""
        dense = np.zeros(vocab_size, dtype=np.float32)
        dense[self.indices] = self.values
        return dense


@dataclass(frozen=True, eq=False)
class SparseEmbeddings:
    """``/embed_sparse``: one :class:`SparseEmbedding` per input text, in order."""

    items: tuple[SparseEmbedding, ...]
    timing: Timing = field(default_factory=Timing)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SparseEmbedding:
        return self.items[index]

    def __iter__(self) -> Iterator[SparseEmbedding]:
        return iter(self.items)

    def to_dicts(self, vocab: VocabLike) -> list[dict[str, float]]:
        """:meth:`SparseEmbedding.to_dict` for every item, looking each distinct id up once."""
        ids = sorted({int(i) for item in self.items for i in item.indices})
        names = dict(zip(ids, _lookup_tokens(vocab, ids), strict=True))
        return [item.to_dict(names) for item in self.items]

    def to_dense(self, vocab_size: int) -> FloatArray:
        """A float32 ``[n, vocab_size]`` matrix."""
        dense = np.zeros((len(self.items), vocab_size), dtype=np.float32)
        for row, item in enumerate(self.items):
            dense[row, item.indices] = item.values
        return dense


# --- rerank and classification ---------------------------------------------------------------


@dataclass(frozen=True)
class RerankResult:
    """One ranked text: its ``index`` in the texts given, its score, and the text if asked."""

    index: int
    score: float
    text: str | None = None


@dataclass(frozen=True)
class Ranking:
    """``/rerank``: results sorted by score, best first."""

    results: tuple[RerankResult, ...]
    timing: Timing = field(default_factory=Timing)

    def __len__(self) -> int:
        return len(self.results)

    @overload
    def __getitem__(self, index: int) -> RerankResult: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RerankResult, ...]: ...
    def __getitem__(self, index: int | slice) -> RerankResult | tuple[RerankResult, ...]:
        return self.results[index]

    def __iter__(self) -> Iterator[RerankResult]:
        return iter(self.results)

    @property
    def indices(self) -> list[int]:
        """The input indices, best first."""
        return [r.index for r in self.results]

    def scores_in_input_order(self) -> FloatArray:
        """The scores as a float32 array aligned with the texts given (not sorted)."""
        scores = np.full(len(self.results), np.nan, dtype=np.float32)
        for r in self.results:
            scores[r.index] = r.score
        return scores


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


@dataclass(frozen=True)
class Predictions:
    """``/predict`` for one input: a score per label, best first.

    For a batch, each input gets its own :class:`Predictions`, whose ``timing`` is that of the
    HTTP request that carried it.
    """

    scores: tuple[Prediction, ...]
    timing: Timing = field(default_factory=Timing)

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: int) -> Prediction:
        return self.scores[index]

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.scores)

    @property
    def label(self) -> str:
        """The best label."""
        return self.scores[0].label

    @property
    def score(self) -> float:
        """The best label's score."""
        return self.scores[0].score

    def as_dict(self) -> dict[str, float]:
        return {p.label: p.score for p in self.scores}


# --- tokenizer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One token of ``/tokenize``; ``start``/``stop`` are byte offsets (None for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None = None
    stop: int | None = None


# --- info ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Info:
    """``/info``.  ``kind`` folds TEI's ``model_type`` and pooling into one word:
    ``embedding`` (dense pooling), ``splade`` (sparse), ``reranker`` (one label) or
    ``classifier`` (several labels)."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    served_model_name: str
    kind: ModelKind
    pooling: str | None
    id2label: Mapping[int, str]
    label2id: Mapping[str, int]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Info:
        """Parse TEI's ``/info`` body; unknown extra fields (newer TEI) are kept in ``raw``."""
        model_type = data["model_type"]
        if not isinstance(model_type, Mapping) or len(model_type) != 1:
            raise ValueError(f"unexpected model_type {model_type!r}")
        ((name, detail),) = model_type.items()
        pooling: str | None = None
        id2label: dict[int, str] = {}
        label2id: dict[str, int] = {}
        kind: ModelKind
        if name == "embedding":
            pooling = str(detail["pooling"])
            kind = "splade" if pooling == "splade" else "embedding"
        elif name in ("classifier", "reranker"):
            kind = "classifier" if name == "classifier" else "reranker"
            id2label = {int(k): str(v) for k, v in detail.get("id2label", {}).items()}
            label2id = {str(k): int(v) for k, v in detail.get("label2id", {}).items()}
        else:
            raise ValueError(f"unknown model_type {name!r}")
        return cls(
            model_id=str(data["model_id"]),
            model_sha=_opt_str(data.get("model_sha")),
            model_dtype=str(data["model_dtype"]),
            served_model_name=str(data.get("served_model_name", data["model_id"])),
            kind=kind,
            pooling=pooling,
            id2label=id2label,
            label2id=label2id,
            max_concurrent_requests=int(data["max_concurrent_requests"]),
            max_input_length=int(data["max_input_length"]),
            max_batch_tokens=int(data["max_batch_tokens"]),
            max_batch_requests=_opt_int(data.get("max_batch_requests")),
            max_client_batch_size=int(data["max_client_batch_size"]),
            auto_truncate=bool(data["auto_truncate"]),
            tokenization_workers=int(data["tokenization_workers"]),
            version=str(data["version"]),
            sha=_opt_str(data.get("sha")),
            docker_label=_opt_str(data.get("docker_label")),
            raw=dict(data),
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def vstack_float32(rows: Iterable[Sequence[float]] | Sequence[Sequence[float]]) -> FloatArray:
    """A float32 ``[n, dim]`` array from JSON lists (``[0, 0]`` when there are none)."""
    array = np.asarray(rows, dtype=np.float32)
    if array.ndim == 1 and array.size == 0:
        return array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(f"expected a list of equal-length vectors, got an array of shape {array.shape}")
    return array
