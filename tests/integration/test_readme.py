"""README.md's Python example, run verbatim against what its Quickstart serves."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "README.md has no python block"
    return str(blocks[0])


def test_the_readme_python_example_runs_as_written(
    router_binary: Callable[..., Path], minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("something already listens on 127.0.0.1:8080, where the Quickstart serves")
    binary = router_binary("cpu")
    monkeypatch.setenv("PYTEI_SERVE_BINARY", str(binary))  # the example's serve() runs this router
    quickstart = RouterSpec(binary=binary, model_dir=minilm_dir, name="quickstart", port=8080)
    namespace: dict[str, Any] = {}
    with ServerProcess(quickstart, ready_timeout=300):
        exec(compile(python_example(), str(README), "exec"), namespace)
    assert namespace["vectors"].shape == (2, 384)
    assert len(namespace["scores"]) == 2
    assert namespace["sparse"]  # token -> weight, not empty
    assert namespace["dense"].shape == (1, 384)
