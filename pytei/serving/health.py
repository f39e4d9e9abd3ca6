"""Asking a router whether it is healthy, and what it serves (``pytei health``).

TEI's ``/health`` answers 200 with an empty body once the model is loaded and warmed up (the
listener is not even bound before that), 503 when the backend reports an error; it is public
even with ``--api-key``.  ``/info`` says what is served and needs the key when one is set.

Requests go straight to the address, like a container probe: proxies configured in the
environment are not used, so ``HTTP_PROXY`` can never turn a local check into a remote one.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pytei._secrets import bearer_headers
from pytei.errors import ConfigError, HealthCheckError

__all__ = [
    "HealthReport",
    "ProbeError",
    "check_health",
    "http_get",
    "http_post_json",
    "model_type_of",
    "normalize_url",
]

# Reasons (HealthCheckError.reason) that may go away by themselves, so `--wait` retries them.
_TRANSIENT = frozenset({"refused", "timeout", "unhealthy"})


class ProbeError(Exception):
    """No HTTP answer: ``reason`` is ``refused``, ``timeout`` or ``error``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalize_url(url: str) -> str:
    """``127.0.0.1:8080`` -> ``http://127.0.0.1:8080``; a trailing slash is dropped."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{url!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8080")
    return text.rstrip("/")


def http_get(
    base_url: str, path: str, *, timeout: float, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """One GET on a fresh connection; raises :class:`ProbeError` when no answer comes."""
    parsed = urllib.parse.urlsplit(base_url)
    host = parsed.hostname or "127.0.0.1"
    conn: http.client.HTTPConnection
    if parsed.scheme == "https":
        conn = http.client.HTTPSConnection(host, parsed.port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parsed.port, timeout=timeout)
    try:
        conn.request("GET", parsed.path.rstrip("/") + path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    except ConnectionRefusedError as exc:
        raise ProbeError("refused", f"connection refused by {host}:{parsed.port}") from exc
    except TimeoutError as exc:
        raise ProbeError("timeout", f"no answer from {base_url} within {timeout:g}s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ProbeError("error", f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def http_post_json(
    base_url: str, path: str, payload: object, *, timeout: float, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """One JSON POST on a fresh connection (no proxies, like :func:`http_get`)."""
    parsed = urllib.parse.urlsplit(base_url)
    host = parsed.hostname or "127.0.0.1"
    conn = http.client.HTTPConnection(host, parsed.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            parsed.path.rstrip("/") + path,
            body=json.dumps(payload),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ProbeError("error", f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def model_type_of(info: Mapping[str, Any]) -> tuple[str, str | None]:
    """TEI's ``/info`` ``model_type`` -> (embedding|splade|reranker|classifier, pooling)."""
    model_type = info.get("model_type")
    if isinstance(model_type, Mapping):
        if "embedding" in model_type:
            embedding = model_type["embedding"]
            pooling = embedding.get("pooling") if isinstance(embedding, Mapping) else None
            pooling = str(pooling) if pooling is not None else None
            return ("splade" if pooling == "splade" else "embedding"), pooling
        for kind in ("reranker", "classifier"):
            if kind in model_type:
                return kind, None
    return "unknown", None


@dataclass(frozen=True)
class HealthReport:
    """What a healthy router serves, from ``/info``."""

    url: str
    model_id: str | None
    model_type: str
    pooling: str | None
    max_input_length: int | None
    max_batch_tokens: int | None
    max_client_batch_size: int | None
    version: str | None
    sha: str | None
    model_dtype: str | None
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": True, **asdict(self)}

    @classmethod
    def from_info(cls, url: str, info: Mapping[str, Any], elapsed_s: float) -> HealthReport:
        kind, pooling = model_type_of(info)

        def number(key: str) -> int | None:
            value = info.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def text(key: str) -> str | None:
            value = info.get(key)
            return str(value) if value is not None else None

        return cls(
            url=url,
            model_id=text("model_id"),
            model_type=kind,
            pooling=pooling,
            max_input_length=number("max_input_length"),
            max_batch_tokens=number("max_batch_tokens"),
            max_client_batch_size=number("max_client_batch_size"),
            version=text("version"),
            sha=text("sha"),
            model_dtype=text("model_dtype"),
            elapsed_s=round(elapsed_s, 4),
        )


def _check_once(url: str, api_key: str | None, timeout: float, started: float) -> HealthReport:
    try:
        status, body = http_get(url, "/health", timeout=timeout)
    except ProbeError as exc:
        hint = "is the router running? (`pytei ps`)" if exc.reason == "refused" else None
        raise HealthCheckError(f"{url} is not healthy: {exc.detail}", reason=exc.reason, hint=hint) from exc
    if status == 503:
        raise HealthCheckError(
            f"{url} is not healthy: /health answered 503 (the backend reports an error)",
            reason="unhealthy",
            hint="see the router's log",
        )
    if status != 200:
        raise HealthCheckError(
            f"{url} is not healthy: /health answered {status}: {body[:200].decode(errors='replace')}",
            reason="error",
            hint="is this a text-embeddings-inference router?",
        )
    headers = bearer_headers(api_key)
    try:
        status, body = http_get(url, "/info", timeout=timeout, headers=headers)
    except ProbeError as exc:
        raise HealthCheckError(f"{url}/info did not answer: {exc.detail}", reason=exc.reason) from exc
    if status == 401:
        raise HealthCheckError(
            f"{url} is up but /info needs an API key" + (" (the one given was refused)" if api_key else ""),
            reason="auth",
            hint="pass --api-key or set PYTEI_API_KEY",
        )
    if status != 200:
        raise HealthCheckError(f"{url}/info answered {status}", reason="error")
    try:
        info = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HealthCheckError(f"{url}/info did not return JSON", reason="error") from exc
    if not isinstance(info, dict):
        raise HealthCheckError(f"{url}/info did not return a JSON object", reason="error")
    return HealthReport.from_info(url, info, time.monotonic() - started)


def check_health(
    url: str, *, api_key: str | None = None, timeout: float = 5.0, wait: float = 0.0
) -> HealthReport:
    """Check ``url`` once, or until healthy for up to ``wait`` seconds.

    Raises :class:`HealthCheckError` whose ``reason`` is ``refused``, ``timeout``,
    ``unhealthy`` (503), ``auth`` (401 on /info) or ``error``.
    """
    url = normalize_url(url)
    started = time.monotonic()
    deadline = started + max(wait, 0.0)
    delay = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            # Never let one try run past the --wait deadline (but always allow one try).
            per_try = min(timeout, remaining) if remaining > 0.05 else timeout
            return _check_once(url, api_key, per_try, started)
        except HealthCheckError as exc:
            remaining = deadline - time.monotonic()
            if exc.reason not in _TRANSIENT or remaining <= 0:
                if wait > 0:
                    exc.message = f"{exc.message} (still, after waiting {wait:g}s)"
                raise
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 1.0)
