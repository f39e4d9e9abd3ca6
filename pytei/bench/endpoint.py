"""Where load goes and what is sent: the target's address and pre-encoded HTTP/1.1 requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pytei.errors import BenchError

__all__ = ["Request", "Target", "build_request"]


@dataclass(frozen=True)
class Target:
    """Where the load goes: host, port and a path prefix taken from the URL."""

    host: str
    port: int
    prefix: str = ""

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise BenchError(
                f"{url}: only http:// URLs can be benchmarked (TEI serves plain HTTP)",
                hint="benchmark the router's own port, not a TLS proxy in front of it",
            )
        if not parts.hostname:
            raise BenchError(f"{url}: no host in the URL", hint="give e.g. http://127.0.0.1:8080")
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise BenchError(f"{url}: bad port ({exc})", hint="give e.g. http://127.0.0.1:8080") from exc
        return cls(parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.authority}{self.prefix}"


@dataclass(frozen=True)
class Request:
    """One pre-encoded request and what it carries (texts, and input tokens when known)."""

    data: bytes
    texts: int = 1
    tokens: int = 0


def build_request(
    target: Target,
    route: str,
    body: bytes | None = None,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    texts: int = 1,
    tokens: int = 0,
) -> Request:
    lines = [
        f"{method} {target.prefix}{route} HTTP/1.1",
        f"Host: {target.authority}",
        "User-Agent: pytei-bench",
    ]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Request(head + (body or b""), texts=texts, tokens=tokens)
