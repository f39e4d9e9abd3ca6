"""pytei.LocalEngine against a fake native module (tests/support/fake_native.py): the facade's
contract, the same as Client's, without the Rust extension (the upstream tier runs the real one)."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytei.build.manifest import BuildManifest
from pytei.client import Client
from pytei.engine import Engine
from pytei.engine.protocol import Engine as EngineProtocol
from pytei.errors import (
    BackendUnavailableError,
    EngineNotBuiltError,
    ModelError,
    TEIBackendError,
    TEIError,
    TEIRequestError,
)
from pytei.local import AsyncLocalEngine, LocalEngine, _native
from pytei.models import reference, weights
from tests.support import fake_native
from tests.support.model_fixtures import tiny_model_dir
from tests.support.tiny_models import TinySpec


@pytest.fixture(autouse=True)
def fake() -> Iterator[None]:
    _native.use_native(fake_native.module())
    fake_native.NativeEngine.calls.clear()
    yield
    _native.use_native(None)


@pytest.fixture
def bert(tmp_path: Path) -> Path:
    return tiny_model_dir(tmp_path / "bert", TinySpec(arch="bert"), seed=4)


@pytest.fixture
def reranker(tmp_path: Path) -> Path:
    return tiny_model_dir(tmp_path / "rr", TinySpec(arch="bert", labels=1), seed=5)


PROTOCOL_METHODS = [n for n, v in vars(EngineProtocol).items() if callable(v) and not n.startswith("_")]


def signatures(owner: type, name: str) -> list[inspect.Signature]:
    """The method's signature, or each of its overloads' (predict)."""
    function = getattr(owner, name)
    overloads = typing.get_overloads(function)
    return [inspect.signature(f) for f in overloads] if overloads else [inspect.signature(function)]


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_every_engine_method_has_the_protocols_signature_on_both_back_ends(name: str) -> None:
    wanted = signatures(EngineProtocol, name)
    local = signatures(LocalEngine, name)
    if "args" in wanted[0].parameters:  # a protocol member made of overloads only (predict)
        wanted = [s.replace(parameters=list(s.parameters.values())) for s in local]
        assert len(local) == 2
    assert [list(s.parameters.values()) for s in local] == [list(s.parameters.values()) for s in wanted], name
    for want, client in zip(wanted, signatures(Client, name), strict=True):
        for parameter in want.parameters.values():
            assert client.parameters[parameter.name] == parameter, (name, parameter.name)
        assert set(client.parameters) - set(want.parameters) <= {"progress"}, name


def test_embed_is_the_reference_with_the_routers_timing(bert: Path) -> None:
    with LocalEngine(str(bert)) as engine:
        assert isinstance(engine, Engine)
        result = engine.embed(["a first text", "and a second, longer text"])
        want = reference.embed(bert, ["a first text", "and a second, longer text"], gelu="tanh")
        np.testing.assert_allclose(result.vectors, want, rtol=1e-6)
        assert result.vectors.dtype == np.float32 and result.vectors.flags.c_contiguous
        tokens = sum(len(e.ids) for e in weights.tokenize(bert, ["a first text", "and a second, longer text"]))
        assert result.timing.compute_tokens == tokens
        assert result.timing.inference_ms == pytest.approx(1.0) and result.timing.queue_ms == pytest.approx(0.05)
        assert result.timing.compute_type == "in-process"
        assert engine.embed("one").vectors.shape == (1, want.shape[1])
        assert engine.embed([]).vectors.shape == (0, want.shape[1])
        sim = engine.similarity("a first text", ["a first text", "other words"])
        assert sim.scores[0] == pytest.approx(1.0, abs=1e-5) and len(sim) == 2
        assert engine.info().kind == "embedding" and engine.info().served_model_name == str(bert)


def test_options_reach_the_engine(bert: Path) -> None:
    with LocalEngine(str(bert), max_batch_tokens=4096, tokenization_workers=3) as engine:
        direction: Any = "Left"  # any case is accepted
        engine.embed("x", truncate=True, truncation_direction=direction, normalize=False, dimensions=8, prompt_name=None)
    (_, (items, options)) = next(c for c in fake_native.NativeEngine.calls if c[0] == "embed")
    assert items == ["x"]
    assert options == {"normalize": False, "dimensions": 8, "truncate": True, "truncation_direction": "left", "prompt_name": None}


def test_errors_are_the_clients_classes(bert: Path) -> None:
    with LocalEngine(str(bert)) as engine:
        with pytest.raises(TEIBackendError) as caught:
            engine.embed_sparse("x")
        assert caught.value.error_type == "Backend"
        with pytest.raises(TEIBackendError, match="re-ranker"):
            engine.rerank("q", ["a"])
        with pytest.raises(TEIBackendError, match="not a classifier"):
            engine.predict("x")
        with pytest.raises(TypeError, match="texts\\[1\\] is int"):
            engine.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TEIError, match="closed"):
        engine.embed("after close")


def test_rerank_and_predict_on_a_reranker(reranker: Path) -> None:
    docs = ["the cat sat", "a dog barked", "cats sit on mats"]
    with LocalEngine(str(reranker)) as engine:
        ranking = engine.rerank("where do cats sit", docs, return_text=True, top_n=2)
        logits = reference.classify(reranker, [("where do cats sit", d) for d in docs], gelu="tanh")[:, 0]
        order = np.argsort(-logits, kind="stable").tolist()
        assert ranking.indices == order[:2] and [r.text for r in ranking] == [docs[i] for i in order[:2]]
        raw = engine.rerank("where do cats sit", docs, raw_scores=True)
        np.testing.assert_allclose(raw.scores_in_input_order(), logits, rtol=1e-5)
        single = engine.predict(("where do cats sit", docs[0]))
        assert len(single) == 1 and single.score == pytest.approx(float(1 / (1 + np.exp(-logits[0]))), rel=1e-5)
        many = engine.predict([("q", "a"), "just a text"])
        assert len(many) == 2
        assert engine.predict([]) == []
        assert engine.rerank("q", []).results == ()


def test_tokenize_and_decode_round_trip(bert: Path) -> None:
    with LocalEngine(str(bert)) as engine:
        tokens = engine.tokenize(["hello world"])
        assert tokens[0][0].special and tokens[0][1].text
        ids = [t.id for t in tokens[0]]
        assert engine.decode(ids) == engine.decode([ids]) and engine.decode([]) == []
        assert engine.health() is True
        assert engine.metrics().total("te_request_count") == 3


def test_the_async_engine_does_not_block_the_loop(bert: Path) -> None:
    async def main() -> tuple[int, int]:
        async with await AsyncLocalEngine.load(str(bert)) as engine:
            results = await asyncio.gather(*(engine.embed(f"text {i}") for i in range(4)))
            return len(results), results[0].vectors.shape[0]

    assert asyncio.run(main()) == (4, 1)


def test_no_extension_or_another_build_is_a_one_line_error(bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _native.use_native(None)
    monkeypatch.setitem(sys.modules, "pytei_native", None)  # as if not installed
    with pytest.raises(EngineNotBuiltError, match=r"not installed in this Python") as caught:
        LocalEngine(str(bert))
    assert caught.value.hint is not None and "pytei build --engine" in caught.value.hint
    assert EngineNotBuiltError.exit_code == 26


def test_the_installed_build_must_be_the_profiles_last(bert: Path) -> None:
    stored = BuildManifest.read(Path(__file__).parents[1] / "build" / "data" / "manifest-0.1.0-ort.json")
    engines = Path(os.environ["PYTEI_HOME"]) / "engines" / "ort"
    engines.mkdir(parents=True)
    manifest = dataclasses.replace(stored, artifact="engine", install_name="ort", env={**stored.env, "PYTEI_BUILD_ID": "other"})
    manifest.write(engines / "manifest.json")
    with pytest.raises(EngineNotBuiltError, match=r"installed here is one built by hand \(build fake-build\), not the ort engine pytei built last \(build other\)"):
        LocalEngine(str(bert), profile="ort")
    with pytest.raises(EngineNotBuiltError, match="no in-process engine has been built for profile 'cuda-hopper'"):
        LocalEngine(str(bert), profile="cuda-hopper")
    dataclasses.replace(manifest, env={**stored.env, "PYTEI_BUILD_ID": "fake-build"}).write(engines / "manifest.json")
    with LocalEngine(str(bert), profile="ort") as engine:
        assert engine.build_info()["install_name"] == "ort"
        # an ort build: the model was exported to ONNX first, as `pytei serve` does
        assert fake_native.NativeEngine.calls[-1][0] == "new" and "/onnx/" in str(fake_native.NativeEngine.calls[-1][1])


def test_a_model_the_engine_cannot_load_is_a_model_error(tmp_path: Path, bert: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        (broken / name).write_bytes((bert / name).read_bytes())
    original = fake_native.NativeEngine.__init__

    def refuse(self: fake_native.NativeEngine, model_dir: str, **options: object) -> None:
        raise fake_native.NativeError("Backend", "Could not start backend: unsupported model")

    fake_native.NativeEngine.__init__ = refuse  # type: ignore[method-assign]
    try:
        with pytest.raises(ModelError, match=r"TEI's engine could not load .*unsupported model"):
            LocalEngine(str(broken))
    finally:
        fake_native.NativeEngine.__init__ = original  # type: ignore[method-assign]


def test_empty_inputs_where_the_router_refuses_them(bert: Path) -> None:
    with LocalEngine(str(bert)) as engine:
        assert engine.tokenize([]) == []
        assert len(engine.embed_all([])) == 0
        with pytest.raises(TEIRequestError):
            engine._call(engine._native.embed, [])  # the native side's own check


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # 3.12+
def test_a_forked_child_is_refused_clearly_and_the_parent_goes_on(bert: Path) -> None:
    import os

    with LocalEngine(str(bert)) as engine:
        engine.embed("before the fork")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: must not hang on the parent's engine threads
            os.close(read)
            try:
                engine.embed("in the child")
                outcome = b"answered"
            except BackendUnavailableError as exc:
                outcome = f"{exc.exit_code} {exc.message}".encode()
            os.write(write, outcome)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            said = pipe.read().decode()
        os.waitpid(pid, 0)
        assert said.startswith("40 this LocalEngine was created in process"), said
        assert engine.embed("after the fork").vectors.shape[0] == 1


@pytest.mark.parametrize(
    ("argument", "environment", "seen"),
    [(None, None, "500"), (None, "200", "200"), (0, "200", "0"), (750, None, "750")],
)
def test_the_batch_wait_reaches_the_engine_at_start_and_only_there(
    bert: Path, monkeypatch: pytest.MonkeyPatch, argument: int | None, environment: str | None, seen: str
) -> None:
    if environment is None:
        monkeypatch.delenv("TEI_BATCH_WAIT_US", raising=False)
    else:
        monkeypatch.setenv("TEI_BATCH_WAIT_US", environment)
    original = fake_native.NativeEngine.__init__
    read: list[str | None] = []

    def spy(self: fake_native.NativeEngine, model_dir: str, **options: object) -> None:
        read.append(os.environ.get("TEI_BATCH_WAIT_US"))  # what TEI's Infer::new reads
        original(self, model_dir, **options)

    monkeypatch.setattr(fake_native.NativeEngine, "__init__", spy)
    LocalEngine(str(bert), batch_wait_us=argument).close()
    assert read == [seen]
    assert os.environ.get("TEI_BATCH_WAIT_US") == environment  # the process's own value is back


@pytest.mark.parametrize(("environment", "seen"), [(None, "4"), ("0", "0"), ("16", "16")])
def test_caller_tokenizers_reach_the_engine_at_start_and_only_there(
    bert: Path, monkeypatch: pytest.MonkeyPatch, environment: str | None, seen: str
) -> None:
    if environment is None:
        monkeypatch.delenv("TEI_CALLER_TOKENIZERS", raising=False)
    else:
        monkeypatch.setenv("TEI_CALLER_TOKENIZERS", environment)
    original = fake_native.NativeEngine.__init__
    read: list[str | None] = []

    def spy(self: fake_native.NativeEngine, model_dir: str, **options: object) -> None:
        read.append(os.environ.get("TEI_CALLER_TOKENIZERS"))  # what TEI's Tokenization::new reads
        original(self, model_dir, **options)

    monkeypatch.setattr(fake_native.NativeEngine, "__init__", spy)
    LocalEngine(str(bert)).close()
    assert read == [seen]
    assert os.environ.get("TEI_CALLER_TOKENIZERS") == environment


def test_a_batch_wait_out_of_range_is_refused(bert: Path) -> None:
    from pytei.errors import ConfigError

    with pytest.raises(ConfigError, match=r"batch_wait_us is -1"):
        LocalEngine(str(bert), batch_wait_us=-1)
    assert not [c for c in fake_native.NativeEngine.calls if c[0] == "new"]
