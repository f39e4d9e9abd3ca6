"""``pytei.LocalEngine``: TEI's own engine inside this process, with :class:`pytei.Client`'s API.

The model is resolved exactly as ``pytei serve`` resolves it (a directory, a catalogue name, a
hub id from the cache), prepared as ``pytei serve`` prepares it for the build's backend (an
ONNX export for ONNX Runtime builds, ORT threads fitted to the cores), and loaded by TEI's
router code (``setup``, pytei patch 0008) into TEI's backend and queue.  Every input of a call
is its own request, so TEI batches the inputs of concurrent calls together; the GIL is
released while the engine works.  Results, timings and error classes are the client's
(:mod:`pytei.engine`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar, overload

import numpy as np

from pytei.cache import Cache
from pytei.client.metrics import Metrics, parse_metrics
from pytei.config import Settings, load_settings
from pytei.engine._errors import error_class
from pytei.engine._inputs import check_encodable, predict_parts, text_list, truncation_side
from pytei.engine.protocol import PredictInput, Texts
from pytei.engine.types import (
    Embeddings,
    Info,
    Prediction,
    Predictions,
    Ranking,
    RerankResult,
    Similarities,
    SparseEmbedding,
    SparseEmbeddings,
    Timing,
    Token,
    TokenEmbeddings,
    TruncationDirection,
)
from pytei.errors import BackendUnavailableError, ConfigError, ModelError, TEIBackendError, TEIError
from pytei.local._environment import (
    CALLER_TOKENIZERS_ENV,
    IN_PROCESS_BATCH_WAIT_US,
    IN_PROCESS_CALLER_TOKENIZERS,
    engine_environment,
)
from pytei.local._native import EngineBuild, native_module, resolve_build

__all__ = ["CALLER_TOKENIZERS_ENV", "IN_PROCESS_BATCH_WAIT_US", "IN_PROCESS_CALLER_TOKENIZERS", "LocalEngine"]

T = TypeVar("T")
_Timings = list[tuple[int, int, int, int]]


def _timing(timings: _Timings, characters: int, started: float) -> Timing:
    """The router's x-*-time accounting for one call: per-input averages, totals summed."""
    n = max(1, len(timings))
    wall = (time.perf_counter() - started) * 1e3
    return Timing(
        compute_type="in-process",
        compute_ms=wall,
        compute_characters=characters,
        compute_tokens=sum(t[0] for t in timings),
        total_ms=wall,
        tokenization_ms=sum(t[1] for t in timings) / n / 1e6,
        queue_ms=sum(t[2] for t in timings) / n / 1e6,
        inference_ms=sum(t[3] for t in timings) / n / 1e6,
    )


def _matrix(buffer: bytes, rows: int, cols: int) -> np.ndarray:
    return np.frombuffer(buffer, dtype="<f4").reshape(rows, cols).astype(np.float32, copy=False)


class LocalEngine:
    """TEI's engine for one model in this process.  Close it (or use ``with``) to free the model.

    ``profile`` picks which ``pytei build --engine`` build must be installed (default: whichever
    is); ``dtype``, ``pooling``, ``max_batch_tokens``... are the router's options of the same names.
    ``batch_wait_us`` is how long a batch may wait for the callers just answered (default
    :data:`IN_PROCESS_BATCH_WAIT_US`, or ``TEI_BATCH_WAIT_US`` when set; 0 is TEI's own batching).
    """

    def __init__(
        self,
        model_id: str | os.PathLike[str] | None = None,
        *,
        profile: str | None = None,
        dtype: str | None = None,
        pooling: str | None = None,
        revision: str | None = None,
        max_batch_tokens: int = 16384,
        max_batch_requests: int | None = None,
        max_concurrent_requests: int = 512,
        max_client_batch_size: int = 32,
        tokenization_workers: int | None = None,
        auto_truncate: bool = True,
        default_prompt_name: str | None = None,
        default_prompt: str | None = None,
        batch_wait_us: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        from pytei.models.resolve import resolve_model  # noqa: PLC0415 (keeps `import pytei` light)
        from pytei.serving.backends import prepare_backend  # noqa: PLC0415
        from pytei.serving.options import MAX_BATCH_WAIT_US, ServeOptions  # noqa: PLC0415

        if batch_wait_us is not None and not 0 <= batch_wait_us <= MAX_BATCH_WAIT_US:
            raise ConfigError(
                f"batch_wait_us is {batch_wait_us}",
                hint=f"use 0 (TEI's own batching) up to {MAX_BATCH_WAIT_US} microseconds",
            )
        settings = settings if settings is not None else load_settings(env=os.environ)
        options = ServeOptions.from_settings(settings)
        cache = Cache.from_settings(settings)
        module = native_module()
        self.build: EngineBuild = resolve_build(module, cache, profile)
        wanted = str(model_id) if model_id is not None else options.default_model
        model = resolve_model(wanted, cache, revision=revision)
        pooling = pooling or model.default_pooling
        cuda = any(f.startswith("candle-cuda") for f in self.build.features)
        if cuda:
            from pytei.local._cuda import link_cuda_libraries, package_dir  # noqa: PLC0415
            from pytei.serving.gpu import require_gpu  # noqa: PLC0415

            require_gpu("this engine build")
            folder = package_dir()
            if folder is not None:  # what cudarc dlopens, where the extension's runpath looks
                link_cuda_libraries(folder, os.environ, options.cuda_lib_dirs)
        prepared = prepare_backend(
            model,
            features=self.build.features,
            device="cuda" if cuda else "cpu",
            pooling=pooling,
            options=options,
            cache=cache,
        )
        for name, value in prepared.env.items():
            os.environ.setdefault(name, value)  # TEI's ORT backend reads them when it loads
        workers = tokenization_workers
        if workers is None and "--tokenization-workers" in prepared.router_args:
            workers = int(prepared.router_args[prepared.router_args.index("--tokenization-workers") + 1])
        self.model_id = wanted
        self.notes = prepared.notes
        try:
            with engine_environment(batch_wait_us):
                self._native = module.NativeEngine(
                    str(prepared.model_dir.path),
                    served_model_name=wanted,
                    dtype=dtype or self._default_dtype(cuda),
                    pooling=pooling,
                    tokenization_workers=workers,
                    max_concurrent_requests=max_concurrent_requests,
                    max_batch_tokens=max_batch_tokens,
                    max_batch_requests=max_batch_requests,
                    max_client_batch_size=max_client_batch_size,
                    auto_truncate=auto_truncate,
                    default_prompt=default_prompt,
                    default_prompt_name=default_prompt_name,
                )
        except module.NativeError as exc:
            kind, message = exc.args if len(exc.args) == 2 else ("Engine", str(exc))
            raise ModelError(f"TEI's engine could not load {wanted}: {message}", hint=f"({kind})") from None
        self._pid = os.getpid()
        self._info = Info.from_json(json.loads(self._native.info()))

    # --- plumbing --------------------------------------------------------------------------

    def _default_dtype(self, cuda: bool) -> str | None:
        """What the router of the same build is served with: the manifest says (float32 on a
        CPU, as candle's CPU float16 is slower there; float16 on CUDA)."""
        if self.build.manifest is not None:
            return self.build.manifest.default_dtype
        return None if cuda else "float32"  # an extension built by hand: the same rule

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if os.getpid() != self._pid:
            # TEI's tokio runtime and backend threads stay in the parent: a forked child would
            # wait forever on a queue nobody serves
            raise BackendUnavailableError(
                f"this LocalEngine was created in process {self._pid}, before a fork(); its engine "
                "threads did not follow into this one",
                hint="create a new LocalEngine in the child (or use the 'spawn' start method)",
            )
        module = native_module()
        try:
            return method(*args, **kwargs)
        except module.NativeError as exc:
            kind, message = exc.args if len(exc.args) == 2 else (None, str(exc))
            cls, hint = error_class(kind)
            raise cls(str(message), error_type=kind, hint=hint) from None

    def close(self) -> None:
        """Free the model (and its memory) once calls in flight return; later calls raise."""
        native = getattr(self, "_native", None)
        if native is not None:
            native.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalEngine({self.model_id!r}, kind={self._info.kind!r}, features={','.join(self.build.features)!r})"

    def build_info(self) -> dict[str, Any]:
        """The extension's build facts (version, fork commit, build id, features) and, when pytei
        built it, the manifest's install name and profile."""
        info = dict(self.build.info)
        if self.build.manifest is not None:
            info.update(install_name=self.build.manifest.install_name, profile=self.build.manifest.profile)
        return info

    @staticmethod
    def _options(
        truncate: bool | None,
        truncation_direction: TruncationDirection | None,
        prompt_name: str | None = None,
    ) -> dict[str, Any]:
        side = truncation_side(truncation_direction)
        return {"truncate": truncate, "truncation_direction": side, "prompt_name": prompt_name}

    # --- dense -----------------------------------------------------------------------------

    def embed(
        self,
        texts: Texts,
        *,
        normalize: bool = True,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        items = text_list(texts)
        if not items:
            return Embeddings(np.zeros((0, self.dimension), dtype=np.float32))
        started = time.perf_counter()
        options = self._options(truncate, truncation_direction, prompt_name)
        buffer, rows, dim, timings = self._call(
            self._native.embed, items, normalize=normalize, dimensions=dimensions, **options
        )
        return Embeddings(_matrix(buffer, rows, dim), _timing(timings, sum(map(len, items)), started))

    @property
    def dimension(self) -> int:
        """The embedding size (one probe embedding, remembered)."""
        if not hasattr(self, "_dimension"):
            _, _, dim, _ = self._call(self._native.embed, ["dimension"], normalize=True)
            self._dimension: int = int(dim)
        return self._dimension

    def embed_all(
        self,
        texts: Texts,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
    ) -> TokenEmbeddings:
        items = text_list(texts)
        if not items:
            return TokenEmbeddings(())
        started = time.perf_counter()
        rows, timings = self._call(
            self._native.embed_all, items, **self._options(truncate, truncation_direction, prompt_name)
        )
        vectors = tuple(_matrix(buffer, n, dim) for buffer, n, dim in rows)
        return TokenEmbeddings(vectors, _timing(timings, sum(map(len, items)), started))

    def similarity(
        self,
        source: str,
        sentences: Sequence[str],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
    ) -> Similarities:
        """Cosine similarity of ``source`` to each sentence (TEI's /similarity: normalized
        embeddings, one dot product each)."""
        if not isinstance(source, str):
            raise TypeError("source must be a str")
        if isinstance(sentences, str):
            raise TypeError("sentences must be a sequence of str, not one str")
        items = text_list(sentences, "sentences")
        if not items:
            return Similarities(np.zeros(0, dtype=np.float32))
        check_encodable([source], "source", single=True)
        result = self.embed(
            [source, *items],
            truncate=truncate,
            truncation_direction=truncation_direction,
            prompt_name=prompt_name,
        )
        scores = (result.vectors[1:] @ result.vectors[0]).astype(np.float32)
        return Similarities(scores, result.timing)

    # --- sparse ----------------------------------------------------------------------------

    def embed_sparse(
        self,
        texts: Texts,
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        prompt_name: str | None = None,
    ) -> SparseEmbeddings:
        items = text_list(texts)
        if not items:
            return SparseEmbeddings(())
        started = time.perf_counter()
        rows, timings = self._call(
            self._native.embed_sparse, items, **self._options(truncate, truncation_direction, prompt_name)
        )
        embeddings = tuple(
            SparseEmbedding(
                np.frombuffer(i, dtype="<u4").astype(np.int64),
                np.frombuffer(v, dtype="<f4").astype(np.float32),
            )
            for i, v in rows
        )
        return SparseEmbeddings(embeddings, _timing(timings, sum(map(len, items)), started))

    # --- rerank and classification ---------------------------------------------------------

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
    ) -> Ranking:
        if not isinstance(query, str):
            raise TypeError("query must be a str")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not one str")
        if top_n is not None and top_n < 0:
            raise ValueError("top_n must be >= 0")
        items = text_list(texts)
        if not items:
            return Ranking(())
        if self._info.kind != "reranker":
            raise TEIBackendError(
                "Backend error: Inference Error: model is not a re-ranker model",
                error_type="Backend",
                hint="check that the route fits the model type: see engine.info().kind",
            )
        check_encodable([query], "query", single=True)
        started = time.perf_counter()
        side = truncation_side(truncation_direction)
        buffer, rows, labels, timings = self._call(
            self._native.predict,
            [(query, text) for text in items],
            truncate=truncate,
            truncation_direction=side,
            raw_scores=raw_scores,
        )
        scores = _matrix(buffer, rows, labels)[:, 0]
        results = sorted(
            (RerankResult(i, float(s), items[i] if return_text else None) for i, s in enumerate(scores)),
            key=lambda r: -r.score,
        )
        characters = len(query) * len(items) + sum(map(len, items))
        return Ranking(
            tuple(results if top_n is None else results[:top_n]), _timing(timings, characters, started)
        )

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

    def predict(
        self,
        inputs: PredictInput | list[PredictInput],
        *,
        truncate: bool | None = None,
        truncation_direction: TruncationDirection | None = None,
        raw_scores: bool = False,
    ) -> Predictions | list[Predictions]:
        single = isinstance(inputs, str | tuple)
        if not single and not isinstance(inputs, list):
            raise TypeError(f"inputs must be a str, a (str, str) pair or a list, not {type(inputs).__name__}")
        batch = (
            [predict_parts(inputs, 0)]
            if single
            else [predict_parts(item, i) for i, item in enumerate(inputs)]
        )
        if not batch:
            return []
        started = time.perf_counter()
        items: list[Any] = [parts[0] if len(parts) == 1 else (parts[0], parts[1]) for parts in batch]
        buffer, rows, labels, timings = self._call(
            self._native.predict,
            items,
            truncate=truncate,
            truncation_direction=truncation_side(truncation_direction),
            raw_scores=raw_scores,
        )
        matrix = _matrix(buffer, rows, labels)
        timing = _timing(timings, sum(len(p) for parts in batch for p in parts), started)
        names = self._info.id2label
        predictions = [
            Predictions(
                tuple(
                    sorted(
                        (Prediction(names.get(j, f"LABEL_{j}"), float(s)) for j, s in enumerate(row)),
                        key=lambda p: -p.score,
                    )
                ),
                timing,
            )
            for row in matrix
        ]
        return predictions[0] if single else predictions

    # --- tokenizer -------------------------------------------------------------------------

    def tokenize(
        self, texts: Texts, *, add_special_tokens: bool = True, prompt_name: str | None = None
    ) -> list[list[Token]]:
        items = text_list(texts)
        if not items:
            return []
        rows = self._call(
            self._native.tokenize, items, add_special_tokens=add_special_tokens, prompt_name=prompt_name
        )
        return [
            [Token(i, text, special, start, stop) for i, text, special, start, stop in row] for row in rows
        ]

    def decode(
        self, ids: Sequence[int] | Sequence[Sequence[int]], *, skip_special_tokens: bool = True
    ) -> list[str]:
        if len(ids) == 0:
            return []
        batch = [list(map(int, ids))] if isinstance(ids[0], int) else [list(map(int, row)) for row in ids]  # type: ignore[arg-type]
        return self._call(self._native.decode, batch, skip_special_tokens=skip_special_tokens)

    # --- service ---------------------------------------------------------------------------

    def info(self) -> Info:
        return self._info

    def health(self) -> bool:
        try:
            return bool(self._call(self._native.health))
        except TEIError:
            return False

    def metrics(self) -> Metrics:
        """TEI's metrics of this process, parsed as :meth:`pytei.Client.metrics` parses the
        router's /metrics (all engines of the process share TEI's one recorder)."""
        return parse_metrics(self._call(self._native.metrics))
