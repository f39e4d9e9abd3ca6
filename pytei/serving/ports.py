"""Choosing and checking TCP ports for routers, before any router is launched.

A router that cannot bind its port dies after loading its model, which can take minutes, with
an error buried in its log; checking first turns that into an immediate, named error.  The
router also binds ``--prometheus-port`` (default 9000) for a moment at startup on the same
address and exits if it is taken, so every router pytei starts gets a free one of its own.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from pytei.errors import AddressNotAvailableError, ConfigError, HostnameError, PortInUseError

__all__ = ["PortRequest", "check_port_free", "describe_port_holder", "parse_port", "reserve_ports"]

# A port given as an int, or None for "any free port" ("auto" on the command line).
PortRequest = int | None


def parse_port(value: int | str | None) -> PortRequest:
    """``8080`` / ``"8080"`` -> 8080; ``"auto"``, ``0`` or None -> None (pick a free one)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", ""):
            return None
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(
                f"port {value!r} is neither a number nor 'auto'", hint="use e.g. 8080 or auto"
            ) from None
    if isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"port {value!r} is out of range", hint="use a number between 1 and 65535, or auto")
    return value or None


def _address(hostname: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The address the router will bind for ``hostname`` (it resolves names the same way)."""
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise HostnameError(
            f"the hostname {hostname!r} does not resolve ({exc.strerror})",
            hint="use an address of this machine (127.0.0.1, 0.0.0.0, ::) or a name in /etc/hosts",
        ) from None
    family, _, _, _, address = infos[0]
    return family, address


def _bind(hostname: str, port: int) -> socket.socket:
    family, address = _address(hostname, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    # The router's listener (Rust std / tokio) sets SO_REUSEADDR, so a port that only has
    # TIME_WAIT connections left is free for it; test the same way, or we would refuse ports
    # the router can use.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(1)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise AddressNotAvailableError(
                f"{hostname} ({address[0]}) is not an address of this host: nothing can listen on it",
                hint="use one of this machine's addresses (`ip -br addr`), 127.0.0.1 or 0.0.0.0",
            ) from None
        raise
    except BaseException:
        sock.close()
        raise
    return sock


def describe_port_holder(port: int) -> str | None:
    """``"pid 123 (text-embeddings-router)"`` for the process listening on ``port``, if visible."""
    import psutil  # noqa: PLC0415 (only needed on this error path)

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process pytei may not inspect (another user's?)"
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            return f"pid {conn.pid} ({name})"
    return None


def _bind_fixed(hostname: str, port: int) -> socket.socket:
    try:
        return _bind(hostname, port)
    except (HostnameError, AddressNotAvailableError):
        raise
    except PermissionError as exc:
        raise PortInUseError(
            f"port {port} on {hostname} cannot be used: {exc.strerror}",
            hint="ports below 1024 need privileges; pick a higher port or --port auto",
        ) from exc
    except OSError as exc:
        holder = describe_port_holder(port)
        held = f" (held by {holder})" if holder else ""
        raise PortInUseError(
            f"port {port} on {hostname} is already in use{held}",
            hint="stop what holds it (`pytei ps` lists pytei's routers), or pass --port auto",
        ) from exc


def check_port_free(hostname: str, port: int) -> None:
    """Raise :class:`PortInUseError` (naming the holder if it can) when ``port`` is taken."""
    _bind_fixed(hostname, port).close()


@contextlib.contextmanager
def reserve_ports(requests: Sequence[tuple[str, PortRequest]]) -> Iterator[list[int]]:
    """Check fixed ports and pick free ones for ``None`` entries; all distinct.

    ``requests`` are ``(hostname, port)`` pairs.  Every port stays bound until the block ends,
    so a port the kernel picks can equal neither a fixed one nor one picked for another router;
    the caller launches the routers right after the block.
    """
    fixed = [port for _, port in requests if port is not None]
    duplicates = sorted({port for port in fixed if fixed.count(port) > 1})
    if duplicates:
        raise ConfigError(
            f"port {duplicates[0]} is asked for by more than one router",
            hint="give each service its own port, or use auto",
        )
    held: list[socket.socket] = []
    try:
        for hostname, port in requests:
            if port is not None:
                held.append(_bind_fixed(hostname, port))
        result: list[int] = []
        for hostname, port in requests:
            if port is None:
                sock = _bind(hostname, 0)
                held.append(sock)
                result.append(int(sock.getsockname()[1]))
            else:
                result.append(port)
        yield result
    finally:
        for sock in held:
            sock.close()
