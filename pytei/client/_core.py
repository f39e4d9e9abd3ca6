"""The plumbing under :class:`pytei.Client`: lifecycle, one request, and splitting a call into
batches that each fit the router's limits (``max_client_batch_size`` from ``/info``, and the
request body size, ``--payload-limit``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

import numpy as np
import requests

from pytei._secrets import read_api_key
from pytei.client._batching import chunk_sizes, run_batches
from pytei.client._retry import RetryPolicy
from pytei.client._transport import Timeout, Transport
from pytei.engine._inputs import truncation_side
from pytei.engine.protocol import Texts
from pytei.engine.types import FloatArray, Info, Timing, TruncationDirection
from pytei.errors import TEIError, TEIPayloadTooLargeError

__all__ = [
    "DEFAULT_PAYLOAD_LIMIT",
    "EMPTY",
    "ClientCore",
    "concat",
    "inputs_slice",
    "merged_timing",
    "request_options",
]

# TEI's --payload-limit default (bytes of request body).
DEFAULT_PAYLOAD_LIMIT = 2_000_000
# JSON around the texts: field names, options, brackets.
_BODY_OVERHEAD = 512

T = TypeVar("T")
_DIRECTIONS = {"left": "Left", "right": "Right"}
EMPTY = np.zeros((0, 0), dtype=np.float32)
EMPTY.flags.writeable = False  # shared by every empty result


def request_options(
    truncate: bool | None, truncation_direction: TruncationDirection | None, prompt_name: str | None = None
) -> dict[str, Any]:
    """The optional request fields, sent only when set (the router's defaults otherwise)."""
    options: dict[str, Any] = {}
    if truncate is not None:
        options["truncate"] = bool(truncate)
    side = truncation_side(truncation_direction)
    if side is not None:
        options["truncation_direction"] = _DIRECTIONS[side]
    if prompt_name is not None:
        options["prompt_name"] = prompt_name
    return options


def inputs_slice(texts: Texts, items: list[str], start: int, stop: int) -> str | list[str]:
    """One text is sent as a string (TEI's "single" form), several as a list slice."""
    return items[0] if isinstance(texts, str) else items[start:stop]


def concat(arrays: list[FloatArray]) -> FloatArray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def merged_timing(parts: Sequence[tuple[object, Timing, int]]) -> Timing:
    return Timing.merge([(timing, count) for _, timing, count in parts])


class ClientCore:
    """Lifecycle, requests and batching; :class:`pytei.Client` adds the routes."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout: Timeout = (5.0, 60.0),
        retries: int | RetryPolicy = 3,
        session: requests.Session | None = None,
        max_concurrency: int = 8,
        max_client_batch_size: int | None = None,
        headers: Mapping[str, str] | None = None,
        max_payload_bytes: int = DEFAULT_PAYLOAD_LIMIT,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if max_client_batch_size is not None and max_client_batch_size < 1:
            raise ValueError("max_client_batch_size must be >= 1")
        if max_payload_bytes < _BODY_OVERHEAD * 2:
            raise ValueError(f"max_payload_bytes must be >= {_BODY_OVERHEAD * 2}")
        self.max_payload_bytes = max_payload_bytes
        api_key = read_api_key(api_key, os.environ)
        self.retry_policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(max_retries=retries)
        self.max_concurrency = max_concurrency
        self._transport = Transport(
            base_url,
            api_key=api_key or None,
            timeout=timeout,
            retry=self.retry_policy,
            session=session,
            pool_size=max_concurrency,
            headers=headers,
        )
        self._batch_limit = max_client_batch_size
        self._info_lock = threading.Lock()
        self._token_texts: dict[int, str] = {}
        self._dimension: int | None = None  # the model's embedding size, once seen

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    def __repr__(self) -> str:
        key = "***" if self._transport.has_key else "None"
        return (
            f"Client({self._transport.display_base!r}, api_key={key}, timeout={self._transport.timeout!r}, "
            f"retries={self.retry_policy.max_retries}, max_concurrency={self.max_concurrency})"
        )

    def close(self) -> None:
        """Close the connection pool (not a session you passed in).  Idempotent."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, payload: Any = None, cancel: threading.Event | None = None
    ) -> tuple[Any, Timing]:
        response = self._transport.request(method, path, payload, cancel=cancel)
        return self._transport.json(response, method, path), Timing.from_headers(response.headers)

    def _parse(self, path: str, parse: Callable[[], T]) -> T:
        try:
            return parse()
        except (ValueError, KeyError, TypeError) as exc:
            shown = f"{self._transport.display_base}{path}"
            raise TEIError(f"unexpected response from {shown}: {exc}", url=shown) from None

    def _max_batch(self, reserve: int = 0) -> int:
        if self._batch_limit is None:
            with self._info_lock:
                if self._batch_limit is None:
                    self._fetch_info()  # sets _batch_limit
        assert self._batch_limit is not None
        size = self._batch_limit - reserve
        if size < 1:
            raise TEIError(
                f"the router's max_client_batch_size ({self._batch_limit}) leaves no room for this call",
                hint="restart the router with a larger --max-client-batch-size",
            )
        return size

    def _fetch_info(self) -> Info:
        data, _ = self._call("GET", "/info")
        info = self._parse("/info", lambda: Info.from_json(data))
        self._batch_limit = info.max_client_batch_size
        return info

    def _spans(
        self, count: int, reserve: int = 0, sizes: Sequence[int] | None = None
    ) -> list[tuple[int, int]]:
        """Batches of at most the router's batch size and (with ``sizes``, each input's encoded
        bytes) of bodies under ``max_payload_bytes``."""
        if count <= 1 and reserve == 0:
            return [(0, count)]
        spans = chunk_sizes(count, self._max_batch(reserve))
        if sizes is None:
            return spans
        budget = self.max_payload_bytes - _BODY_OVERHEAD
        fitted: list[tuple[int, int]] = []
        for start, stop in spans:
            begin, used = start, 0
            for index in range(start, stop):
                if index > begin and used + sizes[index] > budget:
                    fitted.append((begin, index))
                    begin, used = index, 0
                used += sizes[index]
            fitted.append((begin, stop))
        return fitted

    def _post_split(
        self,
        path: str,
        count: int,
        payload: Callable[[int, int], dict[str, Any]],
        parse: Callable[[Any, int, int], T],
        *,
        progress: bool = False,
        reserve: int = 0,
        spans: list[tuple[int, int]] | None = None,
        sizes: Sequence[int] | None = None,
    ) -> list[tuple[T, Timing, int]]:
        """POST ``payload(start, stop)`` for each batch of the ``count`` inputs; return each
        batch's ``parse(body, start, stop)`` with its timing and input count, in input order.
        A batch the router refuses as too large (413) is halved and resent."""

        def post(start: int, stop: int, cancel: threading.Event) -> list[tuple[T, Timing, int]]:
            try:
                data, timing = self._call("POST", path, payload(start, stop), cancel)
            except TEIPayloadTooLargeError:
                if stop - start < 2:
                    raise
                # The router's --payload-limit is below what pytei assumed: halve and resend.
                middle = (start + stop) // 2
                return post(start, middle, cancel) + post(middle, stop, cancel)
            return [(self._parse(path, lambda: parse(data, start, stop)), timing, stop - start)]

        def send(index: int, cancel: threading.Event) -> list[tuple[T, Timing, int]]:
            return post(*batches[index], cancel)

        batches = spans if spans is not None else self._spans(count, reserve, sizes)
        done = run_batches(
            send,
            batches,
            max_concurrency=self.max_concurrency,
            progress=progress,
            description=path.strip("/"),
        )
        return [part for parts in done for part in parts]

    def _post_texts(
        self,
        path: str,
        texts: Texts,
        items: list[str],
        fields: dict[str, Any],
        parse: Callable[[Any, int], T],
        progress: bool,
    ) -> list[tuple[T, Timing, int]]:
        """:meth:`_post_split` for the routes whose body is ``{"inputs": texts, **fields}``."""
        return self._post_split(
            path,
            len(items),
            lambda a, b: {"inputs": inputs_slice(texts, items, a, b), **fields},
            lambda data, a, b: parse(data, b - a),
            progress=progress,
            sizes=self._sizes(items),
        )

    def _sizes(self, items: Sequence[str]) -> list[int] | None:
        """Each text's size in the body, when the body could come near the payload limit (a
        JSON-escaped character takes at most 6 bytes, so short calls skip the count)."""
        if sum(len(text) for text in items) * 6 + _BODY_OVERHEAD <= self.max_payload_bytes:
            return None
        return [len(text.encode("utf-8", "surrogatepass")) + 4 for text in items]
