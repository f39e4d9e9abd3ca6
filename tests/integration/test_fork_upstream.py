"""The fork against the real upstream: fetch and apply through mirrors only, SM87 tests pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from pytei.build.toolchain import Version
from tests.integration.conftest import _ORIGINAL_ENV, pytei_cli, upstream_cache

# git refuses every transport but local files: the mirrors are the only source.
NO_NETWORK = {"GIT_ALLOW_PROTOCOL": "file"}


def test_fetch_and_apply_at_the_pin_use_only_the_mirrors() -> None:
    fetched = pytei_cli("fork", "fetch", env=NO_NETWORK)
    assert fetched.returncode == 0, fetched.stderr
    applied = pytei_cli("fork", "apply", "--discard-edits", env=NO_NETWORK)
    assert applied.returncode == 0, applied.stderr
    status = json.loads(pytei_cli("fork", "status", "--json", env=NO_NETWORK).stdout)
    assert status["commit"] == "06670157fb6c1523482219bdb2d1660277d38088"
    assert status["up_to_date"], status
    assert {p["state"] for p in status["patches"]} == {"applied"}
    names = [p["name"] for p in status["patches"]]
    assert names[:2] == ["0001-candle-sm87-jetson-orin.patch", "0002-router-proto3-optional.patch"]
    tree = Path(status["worktree"])
    assert "(87, 87) => true," in (tree / "backends/candle/src/compute_cap.rs").read_text()
    assert "--experimental_allow_proto3_optional" in (tree / "router/build.rs").read_text()


def test_series_applies_cleanly_at_the_pin() -> None:
    checked = pytei_cli("fork", "check", "--strict", "--json", env=NO_NETWORK)
    assert checked.returncode == 0, checked.stderr
    assert {p["outcome"] for p in json.loads(checked.stdout)["patches"]} == {"clean"}


def _cuda_for_cudarc_013() -> Path | None:
    """A CUDA toolkit that candle's cudarc 0.13 accepts (it refuses CUDA 13)."""
    for home in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda", "/usr"):
        nvcc = Path(home) / "bin" / "nvcc"
        if home and nvcc.is_file():
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
            version = Version.parse(out.split("release", 1)[-1]) if "release" in out else None
            if version is not None and Version(11, 4) <= version < Version(13, 0):
                return Path(home)
    return None


def test_sm87_compute_cap_tests_pass_in_the_patched_tree(tmp_path: Path) -> None:
    """`cargo test` of backends/candle's compute_cap module (feature cuda) in the patched tree.

    The module only compiles with the `cuda` feature, so this needs a CUDA 11.4-12.x nvcc
    (sm_87 support; cudarc 0.13 rejects CUDA 13).  No GPU is needed: the tests are pure.
    """
    cuda = _cuda_for_cudarc_013()
    if cuda is None:
        pytest.skip("needs a CUDA 11.4-12.x toolkit (nvcc) for the candle `cuda` feature; none found")
    # The plan's source arguments (candle checkout, cudarc stand-in) make the tree resolvable.
    env = {"PYTEI_BUILD_CUDA_HOME": str(cuda), "PYTEI_BUILD_CUDARC": "crates-io", **NO_NETWORK}
    output = _cargo_test_in_patched_tree(
        tmp_path, "jetson-orin", env,
        ["-p", "text-embeddings-backend-candle", "--features", "cuda", "--lib"], "compute_cap",
        {"CUDA_COMPUTE_CAP": "87", "CUDA_ROOT": str(cuda), "PATH": f"{cuda / 'bin'}{os.pathsep}{_ORIGINAL_ENV.get('PATH', '')}"},
        target_name="sm87",
    )  # fmt: skip
    for name in (
        "test_compute_cap",
        "test_compute_cap_sm87_native",
        "test_compute_cap_sm87_runtime_against_every_compile_cap",
        "test_compute_cap_sm87_build_against_every_runtime_cap",
    ):
        assert f"compute_cap::tests::{name} ... ok" in output, output[-3000:]


def test_core_tokenizes_on_the_caller_thread_where_asked(tmp_path: Path) -> None:
    """Patch 0010's own Rust test: an encode under TOKENIZE_ON_CALLER uses a set-aside tokenizer
    (same ids as a worker's), gives it back, and falls back to the workers when none is free;
    patch 0013's: the fast WordPiece path gives encode_input's ids, errors and positions; and
    patch 0014's: short single texts it takes are encoded where awaited, the rest by workers;
    and patch 0015's: the queue under a lock forms the batches of upstream's queue thread."""
    # core compiles with one backend; its upstream test module needs hf-hub's sync API (ureq) to
    # compile, though only ours runs (the filter): upstream's own downloads from the hub.
    features = "text-embeddings-backend/candle,hf-hub/ureq"
    cargo_args = ["-p", "text-embeddings-core", "--lib", "--features", features]
    output = _cargo_test_in_patched_tree(tmp_path, "cpu", NO_NETWORK, cargo_args, "pytei_", {}, target_name="core")
    assert "tokenization::tests::pytei_tokenizes_on_the_caller_thread_where_asked ... ok" in output, output[-3000:]
    # patch 0013: encode_input with and without the ids-only WordPiece path, prompts and truncation
    assert "tokenization::tests::pytei_fast_wordpiece_gives_the_ids_of_tokenizers_encode ... ok" in output, output[-3000:]
    assert "tokenization::tests::pytei_tokenizes_short_single_texts_where_awaited ... ok" in output, output[-3000:]
    # patch 0015: the locked queue forms upstream's queue thread's batches
    assert "queue::tests::pytei_locked_queue_batches_as_the_queue_thread_does ... ok" in output, output[-3000:]


def test_candle_gathers_match_the_paths_they_replace(tmp_path: Path) -> None:
    """Patch 0016's own Rust tests (CPU: the same code runs on CUDA with the row-wise kernel):
    mean pooling by a gather and a weighted batched GEMM gives the per-sequence means in float32
    and float16, leaves bf16 and empty batches to the caller; embedding lookups give
    Embedding::forward's rows for flat and padded ids."""
    cargo_args = ["-p", "text-embeddings-backend-candle", "--lib"]
    output = _cargo_test_in_patched_tree(tmp_path, "cpu", NO_NETWORK, cargo_args, "pytei_", {}, target_name="core")
    for name in (
        "pytei_mean_pool_by_gather_matches_the_per_sequence_loop",
        "pytei_mean_pool_by_gather_leaves_what_it_cannot_do_to_the_caller",
        "pytei_embedding_lookup_matches_embedding_forward",
    ):
        assert f"layers::gather::tests::{name} ... ok" in output, output[-3000:]


def _cargo_test_in_patched_tree(
    tmp_path: Path, profile: str, env: dict[str, str], cargo_args: list[str], test_filter: str,
    cargo_env_extra: dict[str, str], *, target_name: str,
) -> str:
    """`cargo test <cargo_args> -- <test_filter>` in a private copy of ``profile``'s patched tree (cargo writes
    Cargo.lock and target/ there), with the plan's source patches; its output."""
    planned = pytei_cli("build", "--profile", profile, "--dry-run", "--json", env=env)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    argv = plan["cargo_argv"]
    config = []
    for index, arg in enumerate(argv[:-1]):
        if arg == "--config" and argv[index + 1].startswith("patch."):
            config += [arg, argv[index + 1]]
    tree = tmp_path / "tree"
    source = Path(plan["source_dir"])
    archive = subprocess.run(["git", "-C", str(source), "archive", "HEAD"], capture_output=True, check=True).stdout
    tree.mkdir()
    archive_path = tmp_path / "tree.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(tree, filter="data")
    # git archive dates every file at its commit, and the series' commits share one fixed date: a
    # changed patch would leave the files as old as the test binary in the shared target dir, and
    # cargo (which finds workspace members by relative path) would run the stale binary
    now = time.time()
    for path in tree.rglob("*"):
        os.utime(path, (now, now), follow_symlinks=False)
    cargo_env = {k: v for k, v in _ORIGINAL_ENV.items() if not k.startswith("PYTEI_")}
    cargo_env.update(
        {
            "RUSTFLAGS": "",
            "RUSTUP_TOOLCHAIN": plan["env"].get("RUSTUP_TOOLCHAIN", "stable"),
            "CARGO_NET_GIT_FETCH_WITH_CLI": "true",
            **cargo_env_extra,
        }
    )
    cargo_env.update({k: v for k, v in mirror_git_env().items() if k.startswith("GIT_CONFIG")})
    target = upstream_cache().area("test-targets", target_name)
    result = subprocess.run(
        ["cargo", "test", *cargo_args, "--target-dir", str(target), *config, "--", test_filter],
        cwd=tree, env=cargo_env, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    shutil.rmtree(tree)
    return output


def mirror_git_env() -> dict[str, str]:
    """GIT_CONFIG_* entries of the developer's mirrors, for cargo's own git fetches (insta)."""
    from pytei.config import load_settings
    from pytei.fork.git import git_environment
    from pytei.fork.mirrors import Mirrors

    settings = load_settings(env={k: v for k, v in _ORIGINAL_ENV.items() if k.startswith("PYTEI_")})
    return git_environment(Mirrors.parse(settings.get_map("git_mirrors")), {})
