"""A real CUDA router build on a machine without a GPU, as CI and many build hosts are: pytei
installs the pinned CUDA 13.0 wheels into its cache (or uses the toolkit given), compiles only
the flash-attention kernels asked for, and records it all; serving it here must refuse cleanly
(no NVIDIA device). The GPU side (parity, contract, benchmarks) runs on the GPU machine:
benchmarks/gpu_run.sh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pytei.build.installs import find_router
from tests.integration.conftest import pytei_cli, upstream_cache

# The flash-attention kernels MiniLM (head dim 32) and BERT-base/large shapes (64) need, fp16,
# non-causal: the build the GPU benchmarks carry, so the kernel cache is shared with it.
KERNELS = ["--flash-attn-head-dims", "32,64", "--flash-attn-dtypes", "fp16"]
KERNEL_ENV = {"PYTEI_BUILD_FLASH_ATTN_CAUSAL": "no"}


def test_cuda_hopper_router_builds_without_a_gpu_and_records_how() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this test is about a build host without a GPU")
    result = pytei_cli("build", "--profile", "cuda-hopper", "--fast", *KERNELS, env=KERNEL_ENV, timeout=5400)
    assert result.returncode == 0, result.stderr[-4000:]
    router = find_router(upstream_cache(), "cuda-hopper-fa32.64-fp16-noncausal-fast")
    manifest = json.loads((router.binary.parent / "manifest.json").read_text())
    assert manifest["device"] == "cuda"
    assert "candle-cuda" in manifest["features"]
    assert manifest["env"]["CUDA_COMPUTE_CAP"] == "90"
    assert manifest["env"]["CANDLE_FLASH_ATTN_HDIMS"] == "32,64"
    assert "CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL" in manifest["env"]["NVCC_APPEND_FLAGS"]
    patches = [p["name"] for p in manifest["patches"]]
    assert any(p.startswith("0012-candle-cuda-memory-pool") for p in patches), patches
    assert any(p.startswith("0013-core-fast-wordpiece") for p in patches), patches
    native = json.dumps(manifest.get("native_libs", {}))
    assert "nvidia-cuda-nvcc" in native or manifest["env"].get("CUDA_ROOT"), native
    # cudarc loads the driver and CUDA libraries at run time: the binary links none of them, so
    # a host with only the runtime wheels (or a container) can run it
    needed = subprocess.run(["readelf", "-d", str(router.binary)], capture_output=True, text=True, check=True).stdout
    assert "libcuda.so" not in needed, needed
    # it links the CUDA runtime (the kernels' libcudart.so.13) and loads the rest at run time:
    # with the toolkit's lib folder, and no driver or GPU, it starts and parses its arguments
    runtime = {**os.environ, "LD_LIBRARY_PATH": str(Path(manifest["env"]["CUDA_ROOT"]) / "lib")}
    help_text = subprocess.run(
        [str(router.binary), "--help"], env=runtime, capture_output=True, text=True, timeout=60, check=False
    )
    assert help_text.returncode == 0 and "--max-batch-tokens" in help_text.stdout, help_text.stderr[-2000:]
    # here there is no GPU: serving it is refused before anything starts, with its own exit code
    served = pytei_cli("serve", "--profile", router.binary.parent.name, "--port", "auto", timeout=120)
    assert served.returncode == 12, (served.returncode, served.stderr[-2000:])
    assert "GPU" in served.stderr or "NVIDIA" in served.stderr, served.stderr[-2000:]
