"""Tasks into request bodies: what each TEI route is sent, and how many texts and tokens that is.

A workload is a fixed set of distinct request bodies, encoded once and sent round-robin, each
with the number of texts it carries and (when they can be counted up front) its input tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import numpy as np

from pytei._secrets import bearer_headers
from pytei.bench.endpoint import Request, Target, build_request
from pytei.bench.texts import TokenCounter
from pytei.errors import BenchError

__all__ = ["ROUTES", "TASKS", "Task", "Workload", "build_workload", "check_against_info"]

Task = Literal["embed", "embed_sparse", "rerank", "predict", "openai"]
TASKS: Final[tuple[str, ...]] = get_args(Task)
ROUTES: Final[Mapping[str, str]] = {
    "embed": "/embed",
    "embed_sparse": "/embed_sparse",
    "rerank": "/rerank",
    "predict": "/predict",
    "openai": "/v1/embeddings",
}


@dataclass(frozen=True)
class Workload:
    task: str
    route: str
    batch_size: int
    bodies: tuple[bytes, ...]
    tokens: tuple[int, ...]  # input tokens per body; all 0 when not known up front
    tokens_known: bool
    pairs: bool = False
    truncate: bool = False

    @property
    def texts_per_request(self) -> int:
        return self.batch_size

    @property
    def mean_tokens(self) -> float | None:
        return float(np.mean(self.tokens)) if self.tokens_known else None

    def requests(self, target: Target, *, api_key: str | None = None) -> list[Request]:
        headers = bearer_headers(api_key) or None
        return [
            build_request(target, self.route, body, headers=headers, texts=self.batch_size, tokens=tokens)
            for body, tokens in zip(self.bodies, self.tokens, strict=True)
        ]


def _body(
    task: str, docs: list[str], query: str | None, *, pairs: bool, truncate: bool, model: str
) -> dict[str, Any]:
    body: dict[str, Any]
    if task in ("embed", "embed_sparse"):
        body = {"inputs": docs[0] if len(docs) == 1 else docs}
    elif task == "rerank":
        body = {"query": query, "texts": docs}
    elif task == "predict":
        items: list[Any] = [[query, d] for d in docs] if pairs else [[d] for d in docs]
        if len(items) == 1:
            # One input is sent unbatched: "text" or ["query", "text"] (a pair).
            body = {"inputs": items[0] if pairs else docs[0]}
        else:
            body = {"inputs": items}
    elif task == "openai":
        return {"input": docs[0] if len(docs) == 1 else docs, "model": model}
    else:
        raise BenchError(f"unknown task {task!r}", hint=f"use one of {', '.join(TASKS)}")
    if truncate:
        body["truncate"] = True
    return body


def build_workload(
    task: str,
    texts: Sequence[str],
    *,
    batch_size: int = 1,
    text_tokens: Sequence[int] | None = None,
    query: str | None = None,
    pairs: bool = False,
    truncate: bool = False,
    counter: TokenCounter | None = None,
    model: str = "tei",
    bodies: int = 256,
    seed: int = 0,
) -> Workload:
    """``bodies`` distinct requests of ``batch_size`` texts drawn from ``texts``.

    ``text_tokens`` are the token counts of ``texts`` (as single inputs).  For rerank and
    predict pairs the query is encoded with each text, so their counts come from
    ``counter.count_pairs`` when it can, and are otherwise left to the server's headers.
    """
    if task not in ROUTES:
        raise BenchError(f"unknown task {task!r}", hint=f"use one of {', '.join(TASKS)}")
    if batch_size < 1:
        raise BenchError(f"--batch-size must be at least 1, got {batch_size}")
    if not texts:
        raise BenchError("no texts to send")
    paired = task == "rerank" or (task == "predict" and pairs)
    if paired and not query:
        raise BenchError(f"task {task} needs a query text")
    rng = np.random.default_rng(seed)
    chosen = [rng.integers(0, len(texts), size=batch_size) for _ in range(max(1, bodies))]
    encoded = tuple(
        json.dumps(
            _body(task, [texts[i] for i in picks], query, pairs=pairs, truncate=truncate, model=model),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        for picks in chosen
    )
    per_text: list[int] | None = None
    if paired:
        if counter is not None and query:
            per_text = counter.count_pairs([(query, t) for t in texts])
    elif text_tokens is not None:
        per_text = list(text_tokens)
    if per_text is None:
        tokens = tuple(0 for _ in chosen)
    else:
        tokens = tuple(int(sum(per_text[i] for i in picks)) for picks in chosen)
    return Workload(
        task=task,
        route=ROUTES[task],
        batch_size=batch_size,
        bodies=encoded,
        tokens=tokens,
        tokens_known=per_text is not None,
        pairs=paired,
        truncate=truncate,
    )


def check_against_info(
    info: Mapping[str, Any] | None, *, task: str, batch_size: int, max_tokens: int | None, truncate: bool
) -> None:
    """Refuse, before any load, what the router would refuse (batch size, input length, task)."""
    if not info:
        return
    limit = info.get("max_client_batch_size")
    if isinstance(limit, int) and batch_size > limit:
        raise BenchError(
            f"--batch-size {batch_size} is larger than the router's max_client_batch_size ({limit})",
            hint=f"use --batch-size {limit} or less, "
            f"or start the router with --max-client-batch-size {batch_size}",
        )
    max_input = info.get("max_input_length")
    if (
        max_tokens is not None
        and isinstance(max_input, int)
        and max_tokens > max_input
        and not truncate
        and not info.get("auto_truncate")
    ):
        raise BenchError(
            f"texts of up to {max_tokens} tokens are longer than the model's max_input_length ({max_input})",
            hint=f"ask for at most {max_input} tokens, or add --truncate",
        )
    model_type = info.get("model_type")
    if isinstance(model_type, dict):
        kind = next(iter(model_type), "")
        wanted = {"rerank": "reranker", "predict": None}.get(task, "embedding")
        if task == "predict" and kind == "embedding":
            raise BenchError(
                "task predict needs a classifier or reranker model; this router serves an embedding model"
            )
        if wanted is not None and kind != wanted:
            raise BenchError(
                f"task {task} needs a {wanted} model; this router serves a {kind} model",
                hint="pick the --task that matches the model (embed, embed_sparse, openai, rerank, predict)",
            )
        pooling = model_type.get("embedding", {}).get("pooling") if kind == "embedding" else None
        if task == "embed_sparse" and pooling != "splade":
            raise BenchError(
                f"task embed_sparse needs a SPLADE model; this router pools with {pooling!r}",
                hint="serve a SPLADE model, or use --task embed",
            )
