"""One HTTP exchange with a TEI router: pooled session, auth, retries, typed errors.

Secrets: the API key lives in a :class:`_Secret` (its repr is ``***``) and is added to the
headers of each request; no message, log line or exception built here contains a header.
TEI errors do not carry the ``requests`` response either, since ``response.request.headers``
would hand the key to whoever logs the error; requests' own exceptions are chained as the
cause with their ``request``/``response`` references removed, for the same reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import requests.adapters
from urllib3.exceptions import NewConnectionError

from pytei._secrets import bearer_headers
from pytei._version import __version__
from pytei.client._retry import RetryPolicy, parse_retry_after
from pytei.engine._errors import error_class
from pytei.errors import TEIConnectionError, TEIError, TEITimeoutError

__all__ = ["Timeout", "Transport", "display_url", "error_from_response"]

log = logging.getLogger("pytei.client")

Timeout = float | tuple[float, float] | None

RETRY_STATUSES = frozenset({429, 503})
# With several routers: answers that say "this router, not this request" (a balancer's 502/504,
# an unhealthy backend's 503); the request goes to another router at once.
FAILOVER_STATUSES = frozenset({502, 503, 504})
_DOWN_FIRST, _DOWN_MAX = 1.0, 30.0  # seconds a failed router is left alone (doubling)
_PROBE_TIMEOUT = 2.0
_MAX_BODY_IN_MESSAGE = 300


class _Secret:
    """A string that never shows itself in repr/str (so ``vars(client)`` is safe to print)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


def display_url(url: str) -> str:
    """The URL without user info, query or fragment: safe for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _error_body(response: requests.Response) -> tuple[str, str | None]:
    """(message, error_type) from TEI's JSON error, the OpenAI-route shape, or plain text."""
    text = response.content.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            if "error" in body:  # {"error": ..., "error_type": "Validation"}
                return str(body["error"]), _opt_str(body.get("error_type"))
            if "message" in body:  # /v1/embeddings: {"message", "code", "type"}
                return str(body["message"]), _opt_str(body.get("type"))
    if len(text) > _MAX_BODY_IN_MESSAGE:
        text = text[:_MAX_BODY_IN_MESSAGE] + "..."
    return text, None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def error_from_response(response: requests.Response, method: str, url: str) -> TEIError:
    """The typed error for a non-2xx response (the ``_raise_for_status`` of the design)."""
    status = response.status_code
    message, error_type = _error_body(response)
    cls, hint = error_class(error_type, status)
    if status == 422 and "batch size" in message:
        hint = "pass fewer inputs per call (the client splits by /info's max_client_batch_size)"
    reason = error_type or response.reason or "error"
    detail = f": {message}" if message else " (empty body)"
    shown = display_url(url)
    return cls(
        f"{method} {shown} -> {status} {reason}{detail}",
        status=status,
        error_type=error_type,
        url=shown,
        hint=hint,
    )


def _strip_request(exc: requests.RequestException) -> requests.RequestException:
    # the request object carries our headers (the API key); a chained cause must not
    exc.request = None
    exc.response = None
    return exc


def _refused(exc: BaseException) -> bool:
    """True when no TCP connection could be made at all (refused, DNS, unreachable)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


@dataclass
class _Endpoint:
    """One router of a Transport: where it is, and since when it is left alone."""

    url: str
    display: str
    down_until: float = 0.0
    failures: int = 0
    contacted: bool = False  # answered at least once (a refusal afterwards means a restart)
    probe: bool = False  # was down: /health must answer before requests go there again


@dataclass(frozen=True)
class _Sent:
    outcome: requests.Response | TEIError
    retry_after: float | None
    retryable: bool
    failover: bool = False  # the router failed, not the request: another router may answer


def _check_url(base_url: str, api_key: str | None) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8080, not {base_url!r}")
    if api_key is not None and (parts.username or parts.password):
        raise ValueError("base_url has user info and api_key is set: only one Authorization can be sent")
    return base_url.rstrip("/")


class Transport:
    """Sends requests to one router, or to several with health-aware failover; thread-safe.

    With several base URLs each request goes to the next router that is up (round robin); a
    router that refuses, drops the connection or answers 502/503/504 is left alone for 1 s,
    doubling to 30 s while it keeps failing, and the request goes to another router at once,
    without waiting.  A router that was down gets a ``GET /health`` before it gets requests
    again.  Only when every router is down does the retry policy wait.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        api_key: str | None,
        timeout: Timeout,
        retry: RetryPolicy,
        session: requests.Session | None,
        pool_size: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("base_url is an empty list: give at least one router URL")
        self._endpoints = [_Endpoint(url, display_url(url)) for url in (_check_url(u, api_key) for u in urls)]
        if len({e.url for e in self._endpoints}) != len(self._endpoints):
            raise ValueError("base_url lists the same router twice")
        self.base_url = self._endpoints[0].url
        self.display_base = ", ".join(e.display for e in self._endpoints)
        self.timeout = timeout
        self.retry = retry
        self._key = _Secret(api_key) if api_key is not None else None
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # one pool per scheme, sized for the bulk concurrency (connections are reused)
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=len(urls), pool_maxsize=max(pool_size, 1)
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        # the Authorization header is added per request, so no long-lived dict holds the key
        base_headers = {"User-Agent": f"pytei/{__version__}", **(headers or {})}
        self._get_headers = base_headers
        self._post_headers = {**base_headers, "Content-Type": "application/json"}
        self._lock = threading.Lock()
        self._next = 0
        self.failovers = 0  # requests sent to another router after one failed (for reports)
        self.closed = False

    @property
    def base_urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    # --- choosing a router -------------------------------------------------------------------

    def _pick(self) -> _Endpoint | None:
        """The next router that is up (round robin), or None when all are left alone."""
        with self._lock:
            now = time.monotonic()
            count = len(self._endpoints)
            for step in range(count):
                endpoint = self._endpoints[(self._next + step) % count]
                if endpoint.down_until <= now:
                    self._next = (self._next + step + 1) % count
                    return endpoint
            return None

    def _soonest(self) -> _Endpoint:
        with self._lock:
            return min(self._endpoints, key=lambda e: e.down_until)

    def _mark_down(self, endpoint: _Endpoint) -> None:
        with self._lock:
            endpoint.failures += 1
            endpoint.down_until = time.monotonic() + min(
                _DOWN_MAX, _DOWN_FIRST * 2 ** (endpoint.failures - 1)
            )
            endpoint.probe = True

    def _mark_up(self, endpoint: _Endpoint) -> None:
        with self._lock:
            endpoint.failures = 0
            endpoint.down_until = 0.0
            endpoint.probe = False
            endpoint.contacted = True

    def _healthy(self, endpoint: _Endpoint, headers: Mapping[str, str]) -> bool:
        try:
            response = self.session.get(
                endpoint.url + "/health", headers=headers, timeout=_PROBE_TIMEOUT, allow_redirects=False
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def close(self) -> None:
        if self._owns_session and not self.closed:
            self.session.close()
        self.closed = True

    def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        cancel: threading.Event | None = None,
        retry: bool = True,
        accept: Collection[int] = (),
    ) -> requests.Response:
        """Send, retrying as the policy says; return a 2xx response (or one in ``accept``)."""
        if self.closed:
            raise TEIError("this Client is closed", hint="create a new Client")
        if payload is None:
            body, headers = None, self._get_headers
        else:
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            headers = self._post_headers
        if self._key is not None:
            headers = {**headers, **bearer_headers(self._key.reveal())}
        several = len(self._endpoints) > 1
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise TEIError(
                    f"{method} {self.display_base}{path} cancelled: another batch of this call failed"
                )
            endpoint = self._pick() if several else self._endpoints[0]
            if endpoint is None:
                error: TEIError = TEIConnectionError(
                    f"{method} {path}: every router is down ({self.display_base})",
                    hint="check them with `pytei health URL`",
                )
                retry_after, retryable = None, True
            elif several and endpoint.probe and not self._healthy(endpoint, headers):
                self._mark_down(endpoint)
                continue
            else:
                sent = self._send_once(endpoint, method, path, body, headers, accept)
                if isinstance(sent.outcome, requests.Response):
                    if several:
                        self._mark_up(endpoint)
                    return sent.outcome
                error, retry_after, retryable = sent.outcome, sent.retry_after, sent.retryable
                if several and sent.failover:
                    self._mark_down(endpoint)
                    if self._pick_would_find():
                        self.failovers += 1
                        log.info(
                            "%s %s on %s: %s; another router", method, path, endpoint.display, error.message
                        )
                        continue
                    retryable = True
            delay = self.retry.delay(attempt, retry_after) if retry and retryable else None
            if delay is None:
                raise error
            if several:  # wait for the router that comes back first, not the full delay
                delay = min(delay, max(0.0, self._soonest().down_until - time.monotonic()) + 0.01)
            log.info(
                "%s %s: %s; retry %d/%d in %.2f s",
                method,
                path,
                error.message,
                attempt + 1,
                self.retry.max_retries,
                delay,
            )
            if not self.retry.wait(delay, cancel):
                raise error
            attempt += 1

    def _pick_would_find(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(e.down_until <= now for e in self._endpoints)

    def _send_once(
        self,
        endpoint: _Endpoint,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        accept: Collection[int],
    ) -> _Sent:
        """One attempt: the response or the error, and what to do about the error."""
        started = time.perf_counter()
        url = endpoint.url + path
        shown = f"{endpoint.display}{path}"  # no user info; cheap per request
        try:
            response = self.session.request(
                method, url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.exceptions.ConnectTimeout as exc:
            error: TEIError = TEITimeoutError(
                f"{method} {shown}: connect timed out", url=shown, hint="is the router reachable from here?"
            )
            error.__cause__ = _strip_request(exc)
            return _Sent(error, None, retryable=True, failover=True)
        except requests.exceptions.Timeout as exc:
            error = TEITimeoutError(
                f"{method} {shown}: no response within the read timeout ({self._read_timeout()} s)",
                url=shown,
                hint="raise timeout=, or send smaller batches (the router may still be working on it)",
            )
            error.__cause__ = _strip_request(exc)
            return _Sent(error, None, retryable=False)
        except (requests.exceptions.SSLError, requests.exceptions.ProxyError) as exc:
            error = TEIConnectionError(f"{method} {shown}: {type(exc).__name__}: {exc}", url=shown)
            error.__cause__ = _strip_request(exc)
            return _Sent(error, None, retryable=False)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            refused = _refused(exc)
            what = "could not connect" if refused else "connection lost (reset or closed mid-response)"
            error = TEIConnectionError(
                f"{method} {shown}: {what}",
                url=shown,
                hint=f"is the router running? try `pytei health {endpoint.display}`" if refused else None,
            )
            error.__cause__ = _strip_request(exc)
            return _Sent(error, None, retryable=not (refused and not endpoint.contacted), failover=True)
        endpoint.contacted = True
        status = response.status_code
        log.debug("%s %s -> %d in %.1f ms", method, shown, status, (time.perf_counter() - started) * 1e3)
        if 200 <= status < 300 or status in accept:
            return _Sent(response, None, retryable=False)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        error = error_from_response(response, method, url)
        return _Sent(
            error, retry_after, retryable=status in RETRY_STATUSES, failover=status in FAILOVER_STATUSES
        )

    def _read_timeout(self) -> float | None:
        return self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout

    def json(self, response: requests.Response, method: str, path: str) -> Any:
        """The decoded JSON body, or a TEIError saying the router answered something else."""
        try:
            return json.loads(response.content)
        except ValueError:
            shown = display_url(response.url or self.base_url + path)
            raise TEIError(
                f"{method} {shown}: the response is not JSON (is {self.display_base} a TEI router?)",
                status=response.status_code,
                url=shown,
            ) from None
