"""CUDA plans: the toolkit (the user's, or PyPI's CUDA 13.0 wheels, or needed), the checks that
matter, flash-attention kernel selection, and the environment of the kernel crates."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pytei.build.cuda import (
    CUDA_PINS,
    CudaPlan,
    FlashSelection,
    cudarc_version_source,
    flash_selection_for_models,
    plan_cuda,
)
from pytei.build.hardware import Machine
from pytei.build.options import BuildOptions, BuildRequest
from pytei.build.plan import make_plan
from pytei.cache import Cache
from pytei.config import load_settings
from pytei.errors import ModelError, ToolVersionError
from tests.support.fake_fork import FakeFork
from tests.unit.build.test_plan import CPU, tools  # noqa: F401 (the tools fixture)

GIB = 2**30


def plan(cache: Cache, cap: int, *, env: dict[str, str] | None = None, jetson: bool = False,
         selection: FlashSelection | None = None, cuda_home: str = "", planning: bool = False) -> CudaPlan:  # fmt: skip
    selection = selection if selection is not None else FlashSelection()
    return plan_cuda(
        cache=cache, env=env if env is not None else {"PATH": "/nonexistent"}, compute_cap=cap,
        cuda_home=cuda_home, jetson=jetson, flash=True, selection=selection,
        memory_available=8 * GIB, cores=4, planning=planning,
    )  # fmt: skip


def test_without_a_toolkit_the_plan_lists_pypi_cuda_as_needed(tmp_path: Path) -> None:
    cuda = plan(Cache(tmp_path / "cache"), 90)
    pin = CUDA_PINS["13.0"]
    assert cuda.pin is pin and cuda.nvcc_version == "13.0"
    assert cuda.needed and all(wheel in cuda.needed[0] for wheel in pin.wheels)
    assert "needed" in cuda.tools["nvcc"]
    assert cuda.env["CUDA_COMPUTE_CAP"] == "90"
    assert cuda.env["CUDA_ROOT"].endswith("native/cuda-13.0/nvidia/cu13")
    # PIC kernels: the router and the in-process engine (a shared object) link the same cache
    assert cuda.env["NVCC_APPEND_FLAGS"] == "-Xcompiler -fPIC -DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL"
    # nvcc threads bounded by memory: 8 GiB / 3.5 GiB per nvcc -> 2 (fewer than the 4 cores)
    assert cuda.env["RAYON_NUM_THREADS"] == "2"
    kernels = {k: v for k, v in cuda.env.items() if k.endswith("_BUILD_DIR")}
    assert set(kernels) == {
        "CANDLE_FLASH_ATTN_BUILD_DIR", "CANDLE_FLASH_ATTN_V1_BUILD_DIR", "CANDLE_LAYER_NORM_BUILD_DIR",
        "CANDLE_ROTARY_BUILD_DIR", "CANDLE_INDEX_SELECT_BUILD_DIR",
    }  # fmt: skip
    assert all("kernels/sm90-cuda13.0-pic/" in v for v in kernels.values())  # per capability and toolkit
    assert any("580.65.06" in note for note in cuda.notes)  # which driver the PTX needs


@pytest.mark.parametrize(("cap", "reason"), [(70, "Volta"), (72, "Xavier")])
def test_cuda_13_refuses_the_capabilities_it_dropped(tmp_path: Path, cap: int, reason: str) -> None:
    with pytest.raises(ToolVersionError, match=f"cannot compile for sm_{cap}: .*{reason}") as caught:
        plan(Cache(tmp_path / "cache"), cap)
    assert caught.value.exit_code == 10 and "build.cuda_home" in (caught.value.hint or "")


def test_jetson_needs_jetpacks_toolkit(tmp_path: Path) -> None:
    with pytest.raises(ToolVersionError, match="JetPack"):
        plan(Cache(tmp_path / "cache"), 87, jetson=True)


def test_a_jetson_dry_run_plans_for_the_board_with_its_toolkit_needed(tmp_path: Path) -> None:
    cuda = plan(Cache(tmp_path / "cache"), 87, jetson=True, planning=True)
    assert cuda.pin is None  # nothing from PyPI: JetPack's toolkit comes with the board
    assert cuda.env["CUDA_COMPUTE_CAP"] == "87" and cuda.env["CUDA_ROOT"] == "/usr/local/cuda"
    assert cuda.nvcc_version == "12.6"
    assert any("JetPack 6's CUDA 12.6" in n and "not Tegra" in n for n in cuda.needed)
    assert "needed" in cuda.tools["nvcc"]
    # no CUDA 13 workaround flag on a CUDA 12 toolkit
    assert "CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL" not in cuda.env.get("NVCC_APPEND_FLAGS", "")


def test_blackwell_plans_with_cuda_13(tmp_path: Path) -> None:
    for cap in (100, 120):
        assert plan(Cache(tmp_path / "cache"), cap).env["CUDA_COMPUTE_CAP"] == str(cap)


def test_a_users_toolkit_wins(tmp_path: Path, tools: Path) -> None:  # noqa: F811 (the fixture)
    cuda = plan(Cache(tmp_path / "cache"), 90, env=dict(os.environ))
    assert cuda.pin is None and cuda.needed == [] and str(tools) in cuda.tools["nvcc"]


def test_cudarc_reads_the_toolkit_only_without_an_explicit_version() -> None:
    assert cudarc_version_source("cudarc v0.13.5 (/x) cuda-12020,cuda-version-from-build-system,std") == (
        "12.2",
        "cuda-12020",
    )
    assert cudarc_version_source("cudarc v0.13.5 (/x) cuda-version-from-build-system,std") is None


def write_config(path: Path, **config: object) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_flash_kernels_for_models_from_their_configs(tmp_path: Path) -> None:
    minilm = write_config(tmp_path / "minilm", architectures=["BertModel"], hidden_size=384, num_attention_heads=12)
    large = write_config(tmp_path / "large", architectures=["BertModel"], hidden_size=1024, num_attention_heads=16)
    assert flash_selection_for_models([minilm, large]) == FlashSelection((32, 64), ("fp16",), "no")
    qwen = write_config(tmp_path / "qwen", architectures=["Qwen3Model"], hidden_size=1024, num_attention_heads=16, head_dim=128)
    assert flash_selection_for_models([qwen], ("bf16",)) == FlashSelection((128,), ("bf16",), "yes")
    assert flash_selection_for_models([minilm, qwen]).causal == "both"
    with pytest.raises(ModelError, match="head size"):
        flash_selection_for_models([write_config(tmp_path / "bad", architectures=["X"])])


def test_selection_env_and_install_name() -> None:
    chosen = FlashSelection((32,), ("fp16",), "no")
    assert chosen.env() == {"CANDLE_FLASH_ATTN_HDIMS": "32", "CANDLE_FLASH_ATTN_DTYPES": "fp16", "CANDLE_FLASH_ATTN_CAUSAL": "no"}
    assert chosen.suffix() == "-fa32-fp16-noncausal"
    assert FlashSelection().env() == {} and FlashSelection().suffix() == ""


def test_a_cuda_plan_provides_the_toolkit_and_names_the_selection(
    fake_fork: FakeFork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cargo = shutil.which("cargo")
    assert cargo is not None
    # cargo and git, but no nvcc: the plan is for another machine
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(cargo).parent), "/usr/bin", "/bin"]))
    for key in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings(env=dict(os.environ))
    request = BuildRequest(profile="cuda-hopper", flash=FlashSelection((32,), ("fp16",), "no"))
    cache = Cache(Path(os.environ["PYTEI_HOME"]))
    machine = Machine(os="linux", arch="x86_64", cores=2, memory_total=24 * GIB, memory_available=20 * GIB)
    result = make_plan(BuildOptions.from_settings(settings), cache, request, machine, resolve_sources=False)
    assert [n.name for n in result.natives] == ["cuda"] and "cuda" in result.native_libs
    assert result.needed and result.install_name == "cuda-hopper-fa32-fp16-noncausal"
    assert result.env["CANDLE_FLASH_ATTN_HDIMS"] == "32"
    assert result.device == "cuda" and result.default_dtype == "float16"
    assert CPU.os == "linux"
