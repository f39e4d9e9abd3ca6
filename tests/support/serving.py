"""Helpers shared by the serve tests (imported by name: pytest puts this directory on sys.path)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psutil


def write_model_dir(
    path: Path, *, config: object = None, tokenizer: bool = True, weights: bool = True
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if config is not False:
        data = (
            config
            if config is not None
            else {"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512}
        )
        (path / "config.json").write_text(
            json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8"
        )
    if tokenizer:
        (path / "tokenizer.json").write_text("{}", encoding="utf-8")
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports, below the ephemeral range (so no outgoing
    connection of another process on this busy machine grabs one in the meantime)."""
    for base in range(21000, 32000, 97):
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise AssertionError("no block of free ports")
