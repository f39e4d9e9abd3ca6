"""CUDA routers on a host with only the CUDA 13 runtime wheels, and the proof that a router uses its
GPU and computes finite numbers."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytei.cache import Cache
from pytei.errors import ServerExitedError
from pytei.serving.gpu import (
    CUDA_LIBRARIES,
    cuda_runtime_env,
    find_cuda_libraries,
    model_device,
    verify_router,
)


def wheel_layout(root: Path) -> Path:
    """What `pip install nvidia-cublas nvidia-cuda-runtime ...` (CUDA 13) leaves: versioned names only."""
    lib = root / "site-packages" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    for name in CUDA_LIBRARIES:
        (lib / name).write_bytes(b"\x7fELF")
    return lib


def test_the_runtime_wheels_are_found_and_linked_under_cudarcs_names(tmp_path: Path) -> None:
    lib = wheel_layout(tmp_path)
    cache = Cache(tmp_path / "cache")
    env = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/other"}
    found = find_cuda_libraries(env, [str(lib)])
    assert set(found) == set(CUDA_LIBRARIES) and all(p.parent == lib for p in found.values())
    extra = cuda_runtime_env(cache, env, [str(lib)])
    folders = extra["LD_LIBRARY_PATH"].split(os.pathsep)
    links = Path(folders[0])
    assert folders[1] == str(lib) and folders[-1] == "/opt/other"
    for versioned, names in CUDA_LIBRARIES.items():
        for name in (*names, versioned):
            assert (links / name).resolve() == (lib / versioned).resolve()
    assert extra["CUDA_CACHE_PATH"] == str(cache.root / "cuda-jit")
    # A user's own JIT cache is kept.
    assert "CUDA_CACHE_PATH" not in cuda_runtime_env(cache, {**env, "CUDA_CACHE_PATH": "/mine"}, [str(lib)])


def test_a_missing_library_names_the_wheels_that_provide_it(tmp_path: Path) -> None:
    lib = wheel_layout(tmp_path)
    (lib / "libcublasLt.so.13").unlink()
    with pytest.raises(ServerExitedError, match=r"needs libcublasLt\.so\.13") as caught:
        cuda_runtime_env(Cache(tmp_path / "cache"), {"PATH": "/usr/bin"}, [str(lib)])
    assert "nvidia-cublas" in (caught.value.hint or "")


class _Embedder(http.server.BaseHTTPRequestHandler):
    answer: bytes = b"[[0.1, 0.2]]"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def embedder() -> Iterator[tuple[str, type[_Embedder]]]:
    handler = type("Handler", (_Embedder,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


GPU_LOG = "INFO text_embeddings_backend_candle: Starting FlashBert model on Cuda(CudaDevice(DeviceId(1)))"
CPU_LOG = "INFO text_embeddings_backend_candle: Starting Bert model on Cpu"


def test_a_router_on_its_gpu_with_finite_numbers_passes(embedder: tuple[str, type[_Embedder]], tmp_path: Path) -> None:
    url, _ = embedder
    assert model_device(GPU_LOG) == ("FlashBert", "Cuda")
    assert verify_router(url, GPU_LOG, device="cuda", name="r", log_path=tmp_path / "log") == "FlashBert on Cuda"


def test_a_silent_cpu_fallback_is_an_error(embedder: tuple[str, type[_Embedder]], tmp_path: Path) -> None:
    url, _ = embedder
    with pytest.raises(ServerExitedError, match="built for CUDA but runs its model on Cpu"):
        verify_router(url, CPU_LOG, device="cuda", name="r", log_path=tmp_path / "log")
    verify_router(url, CPU_LOG, device="cpu", name="r", log_path=tmp_path / "log")  # a CPU build: fine


def test_nan_embeddings_are_an_error(embedder: tuple[str, type[_Embedder]], tmp_path: Path) -> None:
    url, handler = embedder
    handler.answer = json.dumps([[float("nan")] * 4]).encode()  # json writes NaN, as a broken router would
    with pytest.raises(ServerExitedError, match="returned 4 non-finite values of 4") as caught:
        verify_router(url, GPU_LOG, device="cuda", name="r", log_path=tmp_path / "log")
    assert "#896" in (caught.value.hint or "")


def test_a_cuda_router_is_refused_where_no_nvidia_device_is_visible(tmp_path: Path) -> None:
    from pytei.errors import HardwareError
    from pytei.serving.gpu import require_gpu

    with pytest.raises(HardwareError, match="no NVIDIA GPU") as raised:
        require_gpu("the router cuda-hopper", dev=tmp_path)
    assert "--gpus all" in str(raised.value.hint) and raised.value.exit_code == 12
    (tmp_path / "nvidiactl").touch()
    (tmp_path / "nvidia0").touch()
    require_gpu("the router cuda-hopper", dev=tmp_path)  # a GPU visible: no error
