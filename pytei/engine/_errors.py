"""One table from TEI's error vocabulary to pytei's error classes, for every back-end.

TEI's router answers errors as ``{"error": ..., "error_type": "Validation"|"Tokenizer"|"Empty"|
"Overloaded"|"Backend"|"Unhealthy"}`` (``core/src/lib.rs``, PascalCase); the in-process engine
raises one native exception whose ``kind`` is the same word.  Both pick the class here: by
kind first, and (HTTP only) by status when the body carried none (a plain-text 413 from the body
limit, an empty 401).
"""

from __future__ import annotations

from typing import Literal

from pytei.errors import (
    TEIAuthError,
    TEIBackendError,
    TEIError,
    TEIOverloadedError,
    TEIPayloadTooLargeError,
    TEIRequestError,
    TEIUnhealthyError,
    TEIValidationError,
)

__all__ = ["ERROR_KINDS", "ErrorKind", "error_class"]

ErrorKind = Literal["Validation", "Tokenizer", "Empty", "Overloaded", "Backend", "Unhealthy"]

_OVERLOADED = "lower max_concurrency, or raise the router's --max-concurrent-requests"
_BACKEND = "check that the route fits the model type: see client.info().kind"
_UNHEALTHY = "the router's backend reports itself unhealthy: see its log"

# TEI's error kind -> (class, hint).
ERROR_KINDS: dict[str, tuple[type[TEIError], str | None]] = {
    "Validation": (TEIValidationError, None),
    "Tokenizer": (TEIValidationError, None),
    "Empty": (TEIRequestError, "send at least one non-empty input"),
    "Overloaded": (TEIOverloadedError, _OVERLOADED),
    "Backend": (TEIBackendError, _BACKEND),
    "Unhealthy": (TEIUnhealthyError, _UNHEALTHY),
}

# HTTP status -> (class, hint), for answers whose body names no kind.
_BY_STATUS: dict[int, tuple[type[TEIError], str | None]] = {
    401: (TEIAuthError, "pass api_key= (or set PYTEI_API_KEY) with the router's --api-key"),
    413: (TEIPayloadTooLargeError, "send fewer or shorter texts per request, or raise --payload-limit"),
    422: (TEIValidationError, None),
    424: (TEIBackendError, _BACKEND),
    429: (TEIOverloadedError, _OVERLOADED),
    503: (TEIUnhealthyError, _UNHEALTHY),
}


def error_class(kind: str | None, status: int | None = None) -> tuple[type[TEIError], str | None]:
    """The class (and a hint) for TEI's error ``kind``, else for the HTTP ``status``."""
    if kind is not None and kind in ERROR_KINDS:
        return ERROR_KINDS[kind]
    if status is not None:
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        if 400 <= status < 500:
            return TEIRequestError, None
    return TEIError, None
