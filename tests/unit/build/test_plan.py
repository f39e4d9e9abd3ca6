"""Build plans from the test fork: profile, features, tools, env and cargo argv (no compiling)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from pytei.build.hardware import Machine
from pytei.build.options import BuildOptions, BuildRequest
from pytei.build.plan import make_plan
from pytei.cache import Cache
from pytei.config import load_settings
from pytei.errors import BuildError, FeatureError, ProfileError, ToolMissingError, ToolVersionError
from tests.support.fake_fork import FakeFork, diff_of

CPU = Machine(os="linux", arch="x86_64", cpu_vendor="GenuineIntel", cores=8,
              memory_total=16 * 2**30, memory_available=10 * 2**30)  # fmt: skip


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """nvcc (CUDA 13.0, sm_75..sm_121) and protoc 3.12 stand-ins ahead of the real PATH."""
    bin_dir = tmp_path / "bin"
    fake_tool(
        bin_dir,
        "nvcc",
        'case "$1" in --version) echo "Cuda compilation tools, release 13.0, V13.0.88";;\n'
        "--list-gpu-arch) for a in 75 80 86 87 89 90 100 120 121; do echo compute_$a; done;;\nesac\n",
    )
    fake_tool(bin_dir, "protoc", 'echo "libprotoc 3.12.4"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    return bin_dir


def plan_for(request: BuildRequest, machine: Machine = CPU):  # type: ignore[no-untyped-def]
    settings = load_settings(env=dict(os.environ))
    return make_plan(BuildOptions.from_settings(settings), Cache(Path(os.environ["PYTEI_HOME"])), request, machine, resolve_sources=False)


def test_jetson_features_plan_includes_patch_0001_and_cap_87(fake_fork: FakeFork, tools: Path) -> None:
    plan = plan_for(BuildRequest(features=("candle-cuda", "http"), compute_cap=87))
    assert plan.profile.compute_cap == 87
    assert plan.env["CUDA_COMPUTE_CAP"] == "87"
    assert "0001-sm87.patch" in [p["name"] for p in plan.patches]
    assert all(len(p["sha256"]) == 64 for p in plan.patches)
    argv = plan.cargo_argv
    assert argv[argv.index("--features") + 1] == "candle-cuda,http"
    assert "--no-default-features" in argv
    assert plan.tools["nvcc"].endswith("(CUDA 13.0.0)")
    # The plan is for another machine than this one: say so, build anyway.
    assert any("does not fit" in w for w in plan.warnings)


def test_default_plan_is_portable_and_names_the_fork(fake_fork: FakeFork, tools: Path) -> None:
    plan = plan_for(BuildRequest())
    assert plan.profile.name == "ort" and plan.reason.startswith("detected")
    # replaces upstream's target-cpu=native; ONNX Runtime's library lies beside the router
    assert plan.env["RUSTFLAGS"] == "-C link-arg=-Wl,-rpath,$ORIGIN"
    assert plan.env["GIT_SHA"] == plan.fork_commit
    assert plan.env["DOCKER_LABEL"].startswith("pytei-") and plan.fork_commit[:12] in plan.env["DOCKER_LABEL"]
    assert plan.upstream["commit"] == fake_fork.pin
    assert plan.jobs == 3 and "GiB" in plan.jobs_reason  # 10 GiB available / 3 GiB per job
    native = plan_for(BuildRequest(native=True))
    assert native.env["RUSTFLAGS"] == "-C target-cpu=native -C link-arg=-Wl,-rpath,$ORIGIN"


def test_fast_mode_drops_lto_in_its_own_cargo_profile(fake_fork: FakeFork, tools: Path) -> None:
    plan = plan_for(BuildRequest(mode="fast"))
    argv = " ".join(plan.cargo_argv)
    assert "--profile pytei-fast" in argv
    assert 'profile.pytei-fast.lto="off"' in argv and 'profile.pytei-fast.inherits="release"' in argv
    assert plan.target_dir == plan_for(BuildRequest()).target_dir  # one target dir per profile


def test_grpc_needs_protoc_and_accepts_312_with_patch_0002(
    fake_fork: FakeFork, tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test tree's router/build.rs does not pass the flag, so protoc 3.12 cannot compile
    # proto3 optional fields.
    with pytest.raises(ToolVersionError, match=r"3\.12\.4 needs --experimental_allow_proto3_optional"):
        plan_for(BuildRequest(transport="grpc"))
    flag = 'fn main() { protoc_arg("--experimental_allow_proto3_optional"); }\n'
    fake_fork.add_patch("0005-proto3.patch", diff_of(fake_fork.upstream, {"router/build.rs": flag}))
    plan = plan_for(BuildRequest(transport="grpc"))
    assert plan.features[-1] == "grpc" and "protoc" in plan.tools and "PROTOC" in plan.env
    # No protoc at all: a clear error naming the package to install.
    only = tools.parent / "only-git-and-rust"
    only.mkdir()
    for name in ("git", "cargo", "rustc", "rustup"):
        found = shutil.which(name)
        if found:
            (only / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(only))
    with pytest.raises(ToolMissingError) as info:
        plan_for(BuildRequest(transport="grpc"))
    assert "protobuf-compiler" in (info.value.hint or "")


def test_bad_requests_are_clear_errors(fake_fork: FakeFork, tools: Path) -> None:
    with pytest.raises(FeatureError, match="unknown cargo feature 'candel'") as info:
        plan_for(BuildRequest(features=("candel", "http")))
    assert "candle" in (info.value.hint or "")
    with pytest.raises(FeatureError, match="http and grpc"):
        plan_for(BuildRequest(features=("candle", "http", "grpc")))
    with pytest.raises(FeatureError, match="http and grpc"):
        plan_for(BuildRequest(features=("candle", "http"), transport="grpc"))
    with pytest.raises(ProfileError, match="unknown profile 'hoper'") as named:
        plan_for(BuildRequest(profile="hoper"))
    assert "cuda-hopper" in (named.value.hint or "")
    with pytest.raises(ProfileError, match="not 80"):
        plan_for(BuildRequest(profile="cuda-hopper", compute_cap=80))
    with pytest.raises(FeatureError, match="either --profile or --features"):
        plan_for(BuildRequest(profile="cpu", features=("candle",)))


def test_cuda_cap_that_nvcc_cannot_compile(fake_fork: FakeFork, tools: Path) -> None:
    with pytest.raises(ToolVersionError, match="cannot compile for sm_70"):
        plan_for(BuildRequest(profile="cuda-volta"))


def test_profile_needing_a_patch_missing_from_the_series(fake_fork: FakeFork, tools: Path) -> None:
    series = fake_fork.patches / "series"
    series.write_text(series.read_text().replace("0001-sm87.patch\n", ""))
    with pytest.raises(ProfileError, match="needs patch 0001"):
        plan_for(BuildRequest(profile="jetson-orin"))


def test_cpu_mkl_finds_its_openmp_runtime_beside_itself(fake_fork: FakeFork, tools: Path) -> None:
    # MKL is static, Intel's OpenMP is not: without this rpath the router exits at launch
    # ("libiomp5.so: cannot open shared object file")
    plan = plan_for(BuildRequest(profile="cpu-mkl"))
    assert plan.env["RUSTFLAGS"] == "-C link-arg=-Wl,-rpath,$ORIGIN"
    assert "/native/mkl-" in plan.env["MKLROOT"]


def test_the_openmp_runtime_is_installed_with_an_mkl_router(tmp_path: Path) -> None:
    from pytei.build.linklibs import _openmp_runtime
    from pytei.errors import BuildError

    (tmp_path / "lib").mkdir()
    with pytest.raises(BuildError, match=r"no libiomp5\.so"):
        _openmp_runtime(tmp_path)
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"\x7fELF")
    assert _openmp_runtime(tmp_path) == (tmp_path / "lib" / "libiomp5.so",)


def _with_engine_crates(fork: FakeFork) -> None:
    """The fake fork with an engine workspace like tei_fork/engine (a stub: nothing compiles)."""
    engine = fork.fork_dir / "tei_fork" / "engine"
    (engine / "python").mkdir(parents=True)
    (engine / "Cargo.toml").write_text('[workspace]\nmembers = ["python"]\n')
    (engine / "python" / "Cargo.toml").write_text('[package]\nname = "pytei-native"\nversion = "0.1.0"\n')
    fork_toml = fork.fork_dir / "tei_fork" / "fork.toml"
    fork_toml.write_text(
        fork_toml.read_text() + '\n[[crate]]\nname = "pytei-engine"\nsource = "engine"\ndest = "pytei-engine"\n'
    )


def test_an_engine_build_plans_the_extension_with_the_routers_features(fake_fork: FakeFork, tools: Path) -> None:
    _with_engine_crates(fake_fork)
    plan = plan_for(BuildRequest(profile="ort", engine=True))
    assert plan.artifact == "engine" and plan.install_name == "ort"
    assert plan.install_dir.parent.name == "engines"
    assert plan.features == ["ort", "candle"]  # no transport: the engine serves nothing
    argv = plan.cargo_argv
    manifest = Path(argv[argv.index("--manifest-path") + 1])
    assert manifest == Path(plan.source_dir) / "pytei-engine" / "Cargo.toml" and manifest.is_file()
    upstream_lock = Path(plan.source_dir) / "Cargo.lock"
    assert (manifest.parent / "Cargo.lock").is_file() == upstream_lock.is_file()
    assert argv[argv.index("-p") + 1] == "pytei-native" and "--lib" in argv and "--bin" not in argv
    assert plan.target_dir.endswith("target-engine")
    assert len(plan.env["PYTEI_BUILD_ID"]) == 16 and plan.env["PYTEI_ENGINE_FEATURES"] == "ort,candle"
    # the router's plan for the same profile is untouched by it
    router = plan_for(BuildRequest(profile="ort"))
    assert router.artifact == "router" and "--manifest-path" not in router.cargo_argv


def test_a_fork_without_engine_crates_says_so(fake_fork: FakeFork, tools: Path) -> None:
    with pytest.raises(BuildError, match="pytei-engine is missing: the fork has no engine crates"):
        plan_for(BuildRequest(profile="ort", engine=True))
