"""prepare_backend: what an ort, candle or CUDA router is given before it starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytei.cache import Cache
from pytei.models.resolve import ModelDir, inspect_model_dir
from pytei.serving import backends
from pytei.serving.backends import ort_tuning, prepare_backend
from pytei.serving.options import ServeOptions
from tests.support.model_fixtures import tiny_model_dir
from tests.support.tiny_models import TinySpec


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture
def model(tmp_path: Path) -> ModelDir:
    return inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))


@pytest.fixture(autouse=True)
def no_ort_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEI_ORT_INTRA_THREADS", "TEI_ORT_INTER_THREADS", "TEI_ORT_SPIN", "TEI_ORT_MAX_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(backends, "cpu_count", lambda: 8)


def options(**changes: object) -> ServeOptions:
    return dataclasses.replace(ServeOptions(), **changes)  # type: ignore[arg-type]


def test_an_ort_router_gets_the_export_and_the_tuning(model: ModelDir, cache: Cache) -> None:
    prepared = prepare_backend(
        model, features=["ort", "http"], device="cpu", pooling=None, options=options(), cache=cache
    )
    assert prepared.model_dir.onnx is not None and prepared.model_dir.path != model.path
    assert prepared.env == {
        "TEI_ORT_INTRA_THREADS": "8",
        "TEI_ORT_INTER_THREADS": "1",
        "TEI_ORT_MAX_BATCH_SIZE": "32",
    }
    assert "TEI_ORT_SPIN" not in prepared.env  # measured: spinning is faster here
    assert prepared.router_args == ("--tokenization-workers", "2")
    assert any("ONNX export" in note for note in prepared.notes)


def test_the_users_own_settings_win(model: ModelDir, cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEI_ORT_INTER_THREADS", "2")
    prepared = prepare_backend(
        model,
        features=["ort"],
        device="cpu",
        pooling=None,
        options=options(),
        cache=cache,
        user_args=["--tokenization-workers=6"],
        user_env={"TEI_ORT_INTRA_THREADS": "3"},
    )
    assert "TEI_ORT_INTER_THREADS" not in prepared.env and "TEI_ORT_INTRA_THREADS" not in prepared.env
    assert prepared.env["TEI_ORT_MAX_BATCH_SIZE"] == "32"
    assert prepared.router_args == ()


def test_settings_turn_both_off(model: ModelDir, cache: Cache) -> None:
    prepared = prepare_backend(
        model,
        features=["ort"],
        device="cpu",
        pooling=None,
        options=options(onnx_export=False, ort_tuning="upstream"),
        cache=cache,
    )
    assert prepared.model_dir == model and prepared.env == {} and prepared.router_args == ()
    assert not cache.area("onnx").joinpath("digests.json").exists()


def test_a_candle_router_is_left_alone(model: ModelDir, cache: Cache) -> None:
    prepared = prepare_backend(model, features=["mkl", "http"], device="cpu", pooling=None, options=options(), cache=cache)
    assert prepared == backends.Prepared(model)


@pytest.mark.parametrize(("cores", "workers"), [(1, "1"), (2, "1"), (4, "1"), (16, "4")])
def test_tuning_scales_with_cores(cores: int, workers: str) -> None:
    env, args = ort_tuning(cores)
    assert env["TEI_ORT_INTRA_THREADS"] == str(cores)
    assert args == ("--tokenization-workers", workers)


def test_an_unknown_tuning_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytei.config import load_settings
    from pytei.errors import ConfigError

    monkeypatch.setenv("PYTEI_SERVE_ORT_TUNING", "of")
    with pytest.raises(ConfigError, match=r"serve.ort_tuning is 'of' \(env:PYTEI_SERVE_ORT_TUNING\)"):
        ServeOptions.from_settings(load_settings())


def test_a_batch_wait_reaches_any_router_unless_the_user_set_one(
    model: ModelDir, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEI_BATCH_WAIT_US", raising=False)

    def env(serve: ServeOptions, **given: object) -> dict[str, str]:
        return prepare_backend(
            model, features=["mkl", "http"], device="cpu", pooling=None, options=serve, cache=cache, **given
        ).env

    assert "TEI_BATCH_WAIT_US" not in env(options())  # 0: TEI's own batching, nothing set
    with_wait = options(batch_wait_us=300)
    assert env(with_wait) == {"TEI_BATCH_WAIT_US": "300"}
    assert env(with_wait, user_env={"TEI_BATCH_WAIT_US": "50"}) == {}

@pytest.mark.parametrize("value", ["-1", "100001"])
def test_a_batch_wait_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from pytei.config import load_settings
    from pytei.errors import ConfigError

    monkeypatch.setenv("PYTEI_SERVE_BATCH_WAIT_US", value)
    with pytest.raises(ConfigError, match=rf"serve.batch_wait_us is {value} \(env:PYTEI_SERVE_BATCH_WAIT_US\)"):
        ServeOptions.from_settings(load_settings())
