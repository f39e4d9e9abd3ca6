"""``pytei.Client``: every route of a TEI router, typed.

Large inputs are split by the router's ``max_client_batch_size`` (read once from ``/info``,
lazily, on the first call with more than one input) and sent concurrently, at most
``max_concurrency`` requests at a time; results come back in input order and one failing
batch fails the whole call (the error's ``batch_index`` names it).  Batches are also kept under
the router's request-body limit (``max_payload_bytes``), and one the router still refuses as
too large (413) is halved and resent.  See ``_core`` and ``_batching`` for the rules,
``_retry`` for retries, ``_transport`` for errors and secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from pytei._secrets import API_KEY_ENV
from pytei.client import _parse
from pytei.client._core import ClientCore, concat, inputs_slice, merged_timing, request_options
from pytei.client.metrics import Metrics, MetricsParseError, parse_metrics
from pytei.engine._inputs import predict_parts, text_list
from pytei.engine.protocol import PredictInput, Texts
from pytei.engine.types import (
    Embeddings,
    FloatArray,
    Info,
    OpenAIEmbeddings,
    Predictions,
    Ranking,
    Similarities,
    SparseEmbeddings,
    Token,
    TokenEmbeddings,
    TruncationDirection,
)
from pytei.errors import TEIError

if TYPE_CHECKING:
    from pytei.engine.protocol import Engine

__all__ = ["API_KEY_ENV", "Client"]


class Client(ClientCore):
    """A typed client for a TEI router (``text-embeddings-router``'s HTTP API), or for several.

    ``Client(base_url, *, api_key=None, timeout=(5, 60), retries=3, session=None,
    max_concurrency=8, max_client_batch_size=None, headers=None, max_payload_bytes=2_000_000)``

    - ``base_url``: one URL, or a list of routers serving the same model, for users without a
      balancer: requests go round robin to the routers that are up; one that refuses, drops
      the connection or answers 502/503/504 is left alone (1 s, doubling to 30 s) and the
      request goes to another at once; it gets requests again after ``/health`` answers.
    - ``api_key``: sent as ``Authorization: Bearer <key>``, never shown (``repr`` says
      ``***``; errors and logs carry no header).  When None, ``$PYTEI_API_KEY`` is read once,
      here; pass ``api_key=""`` to send no key whatever the environment says.
    - ``timeout``: seconds, ``(connect, read)`` or one number for both; None waits forever.
      The read default (60 s) leaves room for a full batch of long texts on a CPU router.
    - ``retries``: resends of a request answered 429/503 or cut by a connection reset (an int,
      or a :class:`RetryPolicy` for backoff details).  Never 4xx other than 429, never a read
      timeout.  "Connection refused" is retried only once the router has answered this
      client at least once: before that it most likely means a wrong URL or a router not
      started, and failing at once says so.
    - ``session``: a ``requests.Session`` to use as is (its adapters, proxies, certificates);
      it is then yours to close.  Otherwise the client owns one with a connection pool of
      ``max_concurrency`` connections, closed by :meth:`close` or ``with``.
    - ``max_concurrency``: requests in flight at once when a call is split into batches.
    - ``max_client_batch_size``: skip the ``/info`` lookup by giving the router's value.
    - ``max_payload_bytes``: the router's ``--payload-limit`` (TEI's default 2,000,000): long
      texts are sent in smaller batches so that no request body exceeds it.
    """

    # --- embeddings --------------------------------------------------------------------------

    def embed(
        self,
        texts: Texts,
        *,
        normalize: bool = True,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        progress: bool = False,
    ) -> Embeddings:
        """``/embed``: pooled embeddings, float32 ``[len(texts), dim]``.

        ``dimensions`` keeps the first N values (Matryoshka) before normalising.  More texts
        than ``max_client_batch_size`` are split, sent concurrently and reassembled in order;
        ``progress=True`` draws a bar on stderr.  No texts: an empty ``[0, dim]`` result (so it
        stacks with others); the dimension is ``dimensions``, or what this client has already
        seen from the router, or else learnt with one request for a single space.
        """
        items = text_list(texts)
        if not items:
            return Embeddings(self._empty_rows(dimensions))
        fields = request_options(truncate, truncation_direction, prompt_name)
        fields["normalize"] = bool(normalize)
        if dimensions is not None:
            fields["dimensions"] = int(dimensions)
        parts = self._post_texts("/embed", texts, items, fields, _parse.parse_dense, progress)
        vectors = concat([p for p, _, _ in parts])
        if dimensions is None:
            self._dimension = int(vectors.shape[1])
        return Embeddings(vectors, merged_timing(parts))

    def _empty_rows(self, dimensions: int | None) -> FloatArray:
        if dimensions is None and self._dimension is None:
            self.embed(" ")  # remembers the model's dimension
        dim = dimensions if dimensions is not None else self._dimension
        rows = np.zeros((0, dim or 0), dtype=np.float32)
        rows.flags.writeable = False
        return rows

    def embed_all(
        self,
        texts: Texts,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
        progress: bool = False,
    ) -> TokenEmbeddings:
        """``/embed_all``: one float32 ``[tokens, dim]`` array per text (not pooled).

        Split like :meth:`embed`.  The router answers 424 for SPLADE models.
        """
        items = text_list(texts)
        if not items:
            return TokenEmbeddings(())
        fields = request_options(truncate, truncation_direction, prompt_name)
        parts = self._post_texts("/embed_all", texts, items, fields, _parse.parse_token_embeddings, progress)
        return TokenEmbeddings(tuple(v for p, _, _ in parts for v in p), merged_timing(parts))

    def embed_sparse(
        self,
        texts: Texts,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
        progress: bool = False,
    ) -> SparseEmbeddings:
        """``/embed_sparse`` (SPLADE models; others answer 424): (indices, values) per text.

        Split like :meth:`embed`.  ``result[i].to_dict(vocab)`` gives ``{token: weight}``.
        """
        items = text_list(texts)
        if not items:
            return SparseEmbeddings(())
        fields = request_options(truncate, truncation_direction, prompt_name)
        parts = self._post_texts("/embed_sparse", texts, items, fields, _parse.parse_sparse, progress)
        return SparseEmbeddings(tuple(v for p, _, _ in parts for v in p), merged_timing(parts))

    def openai_embed(
        self,
        input: Texts,  # the OpenAI field's name
        *,
        model: str | None = None,
        user: str | None = None,
        encoding_format: Literal["float", "base64"] = "float",
        dimensions: int | None = None,
        progress: bool = False,
    ) -> OpenAIEmbeddings:
        """``/v1/embeddings`` (OpenAI-compatible).  The router always normalises, truncates as
        ``--auto-truncate`` says and applies no prompt.  ``encoding_format="base64"`` moves
        little-endian f32 bytes instead of JSON numbers (decoded here; same values).  Split
        like :meth:`embed`; usage is summed over the requests."""
        if encoding_format not in ("float", "base64"):
            raise ValueError(f"encoding_format must be 'float' or 'base64', not {encoding_format!r}")
        items = text_list(input, "input")
        if not items:
            return OpenAIEmbeddings(self._empty_rows(dimensions))
        fields: dict[str, Any] = {"encoding_format": encoding_format}
        for name, value in (("model", model), ("user", user), ("dimensions", dimensions)):
            if value is not None:
                fields[name] = value
        parts = self._post_split(
            "/v1/embeddings",
            len(items),
            lambda a, b: {"input": inputs_slice(input, items, a, b), **fields},
            lambda data, a, b: _parse.parse_openai(data, b - a),
            progress=progress,
        )
        return OpenAIEmbeddings(
            concat([p[0] for p, _, _ in parts]),
            merged_timing(parts),
            model=parts[0][0][1],
            prompt_tokens=sum(p[2] for p, _, _ in parts),
            total_tokens=sum(p[3] for p, _, _ in parts),
        )

    def similarity(
        self,
        source: str,
        sentences: Sequence[str],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
        progress: bool = False,
    ) -> Similarities:
        """``/similarity``: cosine similarity of ``source`` to each sentence, in order.

        The router counts the source in its batch limit, so sentences go in batches of
        ``max_client_batch_size - 1`` (the source is re-embedded by each).
        """
        if not isinstance(source, str):
            raise TypeError("source must be a str")
        if isinstance(sentences, str):
            raise TypeError("sentences must be a sequence of str, not one str")
        items = text_list(sentences, "sentences")
        if not items:
            return Similarities(np.zeros(0, dtype=np.float32))
        parameters = request_options(truncate, truncation_direction, prompt_name)

        def payload(a: int, b: int) -> dict[str, Any]:
            body: dict[str, Any] = {"inputs": {"source_sentence": source, "sentences": items[a:b]}}
            if parameters:
                body["parameters"] = parameters
            return body

        parts = self._post_split(
            "/similarity",
            len(items),
            payload,
            lambda data, a, b: _parse.parse_scores(data, b - a),
            progress=progress,
            reserve=1,
        )
        return Similarities(concat([p for p, _, _ in parts]), merged_timing(parts))

    # --- rerank and classification -----------------------------------------------------------

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
        progress: bool = False,
    ) -> Ranking:
        """``/rerank`` (reranker models; others answer 424): texts sorted by score, best first.

        More texts than ``max_client_batch_size`` are split; each pair's score does not depend
        on the others, so the parts are merged by re-sorting on score with indices re-based to
        the texts given.  ``top_n`` keeps the best N (done here: TEI has no such field).
        """
        if not isinstance(query, str):
            raise TypeError("query must be a str")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not one str")
        if top_n is not None and top_n < 0:
            raise ValueError("top_n must be >= 0")
        items = text_list(texts)
        if not items:
            return Ranking(())
        fields = request_options(truncate, truncation_direction)
        fields["raw_scores"] = bool(raw_scores)
        fields["return_text"] = bool(return_text)
        parts = self._post_split(
            "/rerank",
            len(items),
            lambda a, b: {"query": query, "texts": items[a:b], **fields},
            lambda data, a, b: _parse.parse_rerank(data, b - a, a),
            progress=progress,
        )
        # stable: an unsplit answer keeps the router's order, ties included
        results = sorted((r for p, _, _ in parts for r in p), key=lambda r: -r.score)
        return Ranking(tuple(results if top_n is None else results[:top_n]), merged_timing(parts))

    @overload
    def predict(
        self,
        inputs: PredictInput,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
        progress: bool = False,
    ) -> Predictions: ...

    @overload
    def predict(
        self,
        inputs: list[PredictInput],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
        progress: bool = False,
    ) -> list[Predictions]: ...

    def predict(
        self,
        inputs: PredictInput | list[PredictInput],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
        progress: bool = False,
    ) -> Predictions | list[Predictions]:
        """``/predict`` (classifier or reranker models): a score per label, best first.

        ``inputs``: a text, a pair ``(a, b)`` (one :class:`Predictions`), or a ``list`` of texts
        and pairs (a list of them, split like :meth:`embed`).  Scores are softmax (several
        labels) or sigmoid (one label) unless ``raw_scores``.
        """
        fields = request_options(truncate, truncation_direction)
        fields["raw_scores"] = bool(raw_scores)
        if isinstance(inputs, str | tuple):
            single = predict_parts(inputs, 0)
            body = {"inputs": single[0] if len(single) == 1 else single, **fields}
            data, timing = self._call("POST", "/predict", body)
            (scores,) = self._parse("/predict", lambda: _parse.parse_predictions(data, None))
            return Predictions(scores, timing)
        if not isinstance(inputs, list):  # the types say it cannot happen; untyped callers can
            raise TypeError(f"inputs must be a str, a (str, str) pair or a list, not {type(inputs).__name__}")
        batch = [predict_parts(item, i) for i, item in enumerate(inputs)]
        if not batch:
            return []
        parts = self._post_split(
            "/predict",
            len(batch),
            lambda a, b: {"inputs": batch[a:b], **fields},
            lambda data, a, b: _parse.parse_predictions(data, b - a),
            progress=progress,
            # a batch of one is still sent as a batch ([[text]]): the answer has the batch shape
            spans=None if len(batch) > 1 else [(0, 1)],
        )
        return [Predictions(scores, timing) for p, timing, _ in parts for scores in p]

    # --- tokenizer ---------------------------------------------------------------------------

    def tokenize(
        self, texts: Texts, *, add_special_tokens: bool = True, prompt_name: str | None = None
    ) -> list[list[Token]]:
        """``/tokenize``: the tokens of each text (ids, text, byte offsets), one list per text."""
        items = text_list(texts)
        if not items:
            return []
        fields: dict[str, Any] = {"add_special_tokens": bool(add_special_tokens)}
        if prompt_name is not None:
            fields["prompt_name"] = prompt_name
        parts = self._post_split(
            "/tokenize",
            len(items),
            lambda a, b: {"inputs": inputs_slice(texts, items, a, b), **fields},
            lambda data, a, b: _parse.parse_tokens(data, b - a),
        )
        return [tokens for p, _, _ in parts for tokens in p]

    def decode(
        self, ids: Sequence[int] | Sequence[Sequence[int]], *, skip_special_tokens: bool = True
    ) -> list[str]:
        """``/decode``: one id sequence (-> a list of one text) or a sequence of them.

        As on the router, an empty ``ids`` is one empty sequence (-> ``[""]``).
        """
        if isinstance(ids, str | bytes):
            raise TypeError("ids must be a sequence of ints or of int sequences")
        seqs: list[list[int]]
        single = len(ids) == 0 or isinstance(ids[0], int | np.integer)
        try:
            seqs = [[int(i) for i in ids]] if single else [[int(i) for i in seq] for seq in ids]  # type: ignore[union-attr, arg-type]
        except TypeError:
            raise TypeError("ids must be a sequence of ints or a sequence of int sequences") from None
        fields = {"skip_special_tokens": bool(skip_special_tokens)}
        parts = self._post_split(
            "/decode",
            len(seqs),
            lambda a, b: {"ids": seqs[0] if single else seqs[a:b], **fields},
            lambda data, a, b: _parse.parse_strings(data, b - a),
        )
        return [text for p, _, _ in parts for text in p]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """What the router's tokenizer prints for each id alone (``/decode`` with special tokens
        kept), cached per client.  Pass it to ``SparseEmbedding.to_dict`` when no local
        ``tokenizers.Tokenizer`` is at hand."""
        wanted = [int(i) for i in ids]
        missing = sorted({i for i in wanted if i not in self._token_texts})
        if missing:
            texts = self.decode([[i] for i in missing], skip_special_tokens=False)
            self._token_texts.update(zip(missing, texts, strict=True))
        return [self._token_texts[i] for i in wanted]

    # --- service -----------------------------------------------------------------------------

    def health(self) -> bool:
        """``/health``: True on 200, False on 503 (the backend reports itself unhealthy).

        A router that cannot be reached raises :class:`TEIConnectionError` (or
        :class:`TEITimeoutError`): "down" and "unreachable" are different answers.  Never
        retried: a probe reports the state now.
        """
        response = self._transport.request("GET", "/health", retry=False, accept=(503,))
        return response.status_code != 503

    def info(self) -> Info:
        """``/info``, fetched now (and its ``max_client_batch_size`` remembered for splitting)."""
        return self._fetch_info()

    def metrics(self) -> Metrics:
        """``/metrics``, parsed (see :mod:`pytei.client.metrics`).  TEI creates each metric on
        first use, so a fresh router lists few."""
        response = self._transport.request("GET", "/metrics")
        try:
            return parse_metrics(response.content.decode("utf-8"))
        except (MetricsParseError, UnicodeDecodeError) as exc:
            shown = f"{self._transport.display_base}/metrics"
            raise TEIError(f"GET {shown}: not Prometheus text: {exc}", url=shown) from None


if TYPE_CHECKING:
    # mypy proves here that Client satisfies the shared interface
    _engine_check: type[Engine] = Client
