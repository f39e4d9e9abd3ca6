"""The upstream tier: real upstream source (through git mirrors), real builds, real routers.

These tests run when the upstream is reachable: ``PYTEI_GIT_MIRRORS`` maps
https://github.com/huggingface/text-embeddings-inference (and candle, cutlass, insta) to local
clones, or ``PYTEI_UPSTREAM_TESTS=1`` says the network may be used.  Otherwise each is skipped
with the reason.  Builds go to the developer's own pytei cache (``PYTEI_HOME`` as set when
pytest started, or pytei's default) so they are incremental from one run to the next.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytei.build.installs import find_router
from pytei.build.manifest import BuildManifest
from pytei.cache import Cache
from pytei.config import load_settings
from pytei.serving.gpu import cuda_runtime_env
from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec
from tests.support import model_fixtures

UPSTREAM_URL = "https://github.com/huggingface/text-embeddings-inference"
# Captured before any fixture rewrites the environment.
_ORIGINAL_ENV = dict(os.environ)


def _upstream_reason() -> str | None:
    if _ORIGINAL_ENV.get("PYTEI_UPSTREAM_TESTS", "") not in ("", "0"):
        return None
    mirrors = _ORIGINAL_ENV.get("PYTEI_GIT_MIRRORS", "")
    if UPSTREAM_URL in mirrors:
        return None
    return (
        "upstream tier: set PYTEI_GIT_MIRRORS to local mirrors of huggingface/text-embeddings-inference, "
        "huggingface/candle, NVIDIA/cutlass and OlivierDehaene/insta (or PYTEI_UPSTREAM_TESTS=1 to use the network)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _upstream_reason()
    for item in items:
        if "integration" in item.path.parts and item.get_closest_marker("upstream") is None:
            item.add_marker(pytest.mark.upstream)
        if item.get_closest_marker("timeout") is None:
            # Real builds take minutes on a small machine; unit tests keep the global limit.
            item.add_marker(pytest.mark.timeout(3600))
        if reason and item.get_closest_marker("upstream") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def _upstream_env() -> dict[str, str]:
    """The developer's pytei settings (mirrors, cache), which unit tests deliberately drop."""
    return {k: v for k, v in _ORIGINAL_ENV.items() if k.startswith("PYTEI_")}


@pytest.fixture(autouse=True)
def isolated_pytei(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Upstream tests use the developer's real cache and mirrors (unlike unit tests)."""
    for name in list(os.environ):
        if name.startswith("PYTEI_"):
            monkeypatch.delenv(name)
    for name, value in _upstream_env().items():
        monkeypatch.setenv(name, value)
    yield upstream_cache().root


def upstream_cache() -> Cache:
    return Cache.from_settings(load_settings(env=_upstream_env()))


def pytei_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run the pytei CLI as a user would, with the developer's settings."""
    full = {k: v for k, v in _ORIGINAL_ENV.items() if not k.startswith("PYTEI_")}
    full.update(_upstream_env())
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytei", *args], env=full, capture_output=True, text=True, timeout=timeout, check=False
    )


_built: dict[tuple[str, str], Path] = {}


def build_router(profile: str, *, transport: str = "http", mode: str = "fast") -> Path:
    """Build (incrementally) and return the router for ``profile``; fails the test on error."""
    key = (profile, transport)
    if key not in _built:
        args = ["build", "--profile", profile, f"--{transport}"]
        if mode == "fast":
            args.append("--fast")
        result = pytei_cli(*args)
        if result.returncode != 0:
            pytest.fail(f"pytei {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        name = profile + ("-grpc" if transport == "grpc" else "")
        _built[key] = find_router(upstream_cache(), name).binary
    return _built[key]


@pytest.fixture(scope="session")
def router_binary() -> Callable[..., Path]:
    return build_router


_engines: dict[str, Any] = {}


def build_engine(profile: str = "cpu", mode: str = "fast") -> str:
    """Build (incrementally) and install the in-process engine for ``profile`` into this
    Python; returns its install name.  Fails the test on error."""
    name = profile + ("-fast" if mode == "fast" else "")
    if name not in _engines:
        args = ["build", "--engine", "--profile", profile, *(["--fast"] if mode == "fast" else [])]
        result = pytei_cli(*args)
        if result.returncode != 0:
            pytest.fail(f"pytei {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        _engines[name] = name
    return name


def local_engine(model_dir: Path, *, pooling: str | None = None) -> Any:
    """A LocalEngine of the contract's engine build (float32, like the contract's routers)."""
    from pytei.local import LocalEngine

    key = f"{model_dir}|{pooling}"
    if key not in _engines:
        profile = build_engine(CONTRACT_ENGINE)
        _engines[key] = LocalEngine(
            str(model_dir), profile=profile, dtype=CONTRACT_DTYPE, pooling=pooling, settings=load_settings(env=_upstream_env())
        )
    return _engines[key]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for engine in _engines.values():
        if hasattr(engine, "close"):
            engine.close()


@contextlib.contextmanager
def run_router(
    binary: Path,
    model_dir: Path,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    pooling: str | None = None,
    ready_timeout: float = 300.0,
) -> Iterator[str]:
    """A real router on a free loopback port; yields its base URL and stops it afterwards."""
    manifest_path = binary.parent / "manifest.json"
    spec = RouterSpec(
        binary=binary,
        model_dir=model_dir,
        name=model_dir.name,
        pooling=pooling,
        router_args=tuple(extra_args),
        env=dict(env or {}),
        # the manifest says the transport: a gRPC router is probed over gRPC, not HTTP
        manifest=BuildManifest.read(manifest_path) if manifest_path.is_file() else None,
    )
    with ServerProcess(spec, ready_timeout=ready_timeout) as server:
        yield server.url


@pytest.fixture(scope="session")
def serve_router() -> Callable[..., contextlib.AbstractContextManager[str]]:
    return run_router


@pytest.fixture(scope="session")
def model_cache() -> Cache:
    return model_fixtures.shared_model_cache(_ORIGINAL_ENV)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return upstream_cache().area("test-fixtures")


@pytest.fixture(scope="session")
def minilm_dir(model_cache: Cache) -> Path:
    return model_fixtures.minilm_dir(model_cache)


@pytest.fixture(scope="session")
def splade_dir(model_cache: Cache, fixtures_dir: Path) -> Path:
    return model_fixtures.splade_tiny_dir(model_cache, fixtures_dir / "splade-tiny")


@pytest.fixture(scope="session")
def reranker_dir(model_cache: Cache, fixtures_dir: Path) -> Path:
    return model_fixtures.reranker_dir(model_cache, fixtures_dir / "reranker")


@pytest.fixture(scope="session")
def classifier_dir(model_cache: Cache, fixtures_dir: Path) -> Path:
    return model_fixtures.classifier_dir(model_cache, fixtures_dir / "classifier")


# Routers for the client contract: the CPU profile built here, float32 so values match the
# numpy reference (candle's CPU default is float16).  PYTEI_CONTRACT_ROUTER names an installed
# router to hold to the same contract instead (a CUDA build on a GPU machine, with
# PYTEI_CONTRACT_DTYPE=float16: benchmarks/gpu_run.sh).
CONTRACT_ROUTER = _ORIGINAL_ENV.get("PYTEI_CONTRACT_ROUTER", "")
CONTRACT_DTYPE = _ORIGINAL_ENV.get("PYTEI_CONTRACT_DTYPE", "float32")
# The engine build the in-process half of the contract uses (`pytei build --engine --fast`).
CONTRACT_ENGINE = "cpu"
_DTYPE = ("--dtype", CONTRACT_DTYPE)


@dataclass(frozen=True)
class ContractRouter:
    binary: Path
    env: Mapping[str, str]


@pytest.fixture(scope="session")
def contract_router() -> ContractRouter:
    if not CONTRACT_ROUTER:
        return ContractRouter(build_router("cpu"), {})
    router = find_router(upstream_cache(), CONTRACT_ROUTER)
    env = cuda_runtime_env(upstream_cache(), os.environ) if router.manifest.device == "cuda" else {}
    return ContractRouter(router.binary, env)


@pytest.fixture(scope="session")
def minilm_url(contract_router: ContractRouter, minilm_dir: Path) -> Iterator[str]:
    with run_router(contract_router.binary, minilm_dir, _DTYPE, contract_router.env) as url:
        yield url


@pytest.fixture(scope="session")
def splade_url(contract_router: ContractRouter, splade_dir: Path) -> Iterator[str]:
    with run_router(contract_router.binary, splade_dir, _DTYPE, contract_router.env, pooling="splade") as url:
        yield url


@pytest.fixture(scope="session")
def reranker_url(contract_router: ContractRouter, reranker_dir: Path) -> Iterator[str]:
    with run_router(contract_router.binary, reranker_dir, _DTYPE, contract_router.env) as url:
        yield url


@pytest.fixture(scope="session")
def classifier_url(contract_router: ContractRouter, classifier_dir: Path) -> Iterator[str]:
    with run_router(contract_router.binary, classifier_dir, _DTYPE, contract_router.env) as url:
        yield url


@pytest.fixture(scope="session")
def bert_reference():  # type: ignore[no-untyped-def]
    from tests.support import bert_reference as module

    return module
