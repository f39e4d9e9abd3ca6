"""pytei's numpy NomicBert and GTE reference: the properties its forward pass must have (TEI's
own models agreeing with it is the matrix's check, in the upstream tier)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pytei.models import reference
from pytei.models.rotary_encoders import is_rotary_encoder, rotary_encoder_hidden
from pytei.models.weights import encode_batch
from tests.support.tiny_models import TinySpec, write_tiny_model

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world", "what is deep learning ?"]
SPEC = TinySpec(arch="nomic", hidden=64, heads=4, intermediate=96, layers=2)


@pytest.fixture(scope="module")
def nomic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("nomic") / "model", SPEC, seed=5)


def _copy(source: Path, target: Path, config: dict[str, object] | None = None) -> Path:
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (target / name).symlink_to(source / name)
    base = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (target / "config.json").write_text(json.dumps({**base, **(config or {})}), encoding="utf-8")
    return target


def test_a_padded_row_equals_the_text_alone(nomic_dir: Path) -> None:
    assert is_rotary_encoder(nomic_dir)
    batch = encode_batch(nomic_dir, TEXTS)
    hidden = rotary_encoder_hidden(nomic_dir, batch)
    for row, text in enumerate(TEXTS):
        alone = rotary_encoder_hidden(nomic_dir, encode_batch(nomic_dir, [text]))[0]
        np.testing.assert_allclose(hidden[row][batch.attention_mask[row].astype(bool)], alone, atol=1e-9)


def test_heads_permuted_consistently_give_the_same_states(nomic_dir: Path, tmp_path: Path) -> None:
    """Wqkv is [queries, keys, values], each head-major: moving head 0's rows to head 1 in all
    three and the matching columns of out_proj must change nothing."""
    target = _copy(nomic_dir, tmp_path / "permuted")
    (target / "model.safetensors").unlink()
    tensors = load_file(str(nomic_dir / "model.safetensors"))
    hidden, heads = SPEC.hidden, SPEC.heads
    size = hidden // heads
    order = np.arange(heads)
    order[[0, 1]] = [1, 0]
    rows = np.concatenate([part * hidden + order[:, None] * size + np.arange(size) for part in range(3)]).ravel()
    columns = (order[:, None] * size + np.arange(size)).ravel()
    for layer in range(SPEC.layers):
        p = f"encoder.layers.{layer}.attn."
        tensors[p + "Wqkv.weight"] = tensors[p + "Wqkv.weight"][rows]
        # (contiguous: safetensors' numpy writer stores a Fortran-ordered array's bytes as if C-ordered)
        tensors[p + "out_proj.weight"] = np.ascontiguousarray(tensors[p + "out_proj.weight"][:, columns])
    save_file(tensors, str(target / "model.safetensors"))
    batch = encode_batch(nomic_dir, TEXTS[:1])
    np.testing.assert_allclose(rotary_encoder_hidden(target, batch), rotary_encoder_hidden(nomic_dir, batch), atol=1e-9)


def test_the_rotary_base_matters(nomic_dir: Path, tmp_path: Path) -> None:
    other = _copy(nomic_dir, tmp_path / "base", {"rotary_emb_base": 10000})
    a, b = (reference.embed(d, TEXTS) for d in (nomic_dir, other))
    assert float(np.min(np.sum(a * b, axis=1))) < 0.9999


@pytest.mark.parametrize(
    ("config", "named"),
    [({"prenorm": True}, "pre-norm"), ({"rotary_emb_interleaved": True}, "interleaved"),
     ({"moe_every_n_layers": 2}, "mixture-of-experts"), ({"rotary_emb_fraction": 0.5}, "partial")],
)  # fmt: skip
def test_what_is_not_covered_is_refused(nomic_dir: Path, tmp_path: Path, config: dict[str, object], named: str) -> None:
    other = _copy(nomic_dir, tmp_path / "uncovered", config)
    with pytest.raises(ValueError, match=named):
        reference.embed(other, TEXTS[:1])


GTE = TinySpec(arch="gte", hidden=64, heads=4, intermediate=96, layers=2)


@pytest.fixture(scope="module")
def gte_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("gte") / "model", GTE, seed=6)


def test_gte_a_padded_row_equals_the_text_alone(gte_dir: Path) -> None:
    assert is_rotary_encoder(gte_dir)
    batch = encode_batch(gte_dir, TEXTS)
    hidden = rotary_encoder_hidden(gte_dir, batch)
    for row, text in enumerate(TEXTS):
        alone = rotary_encoder_hidden(gte_dir, encode_batch(gte_dir, [text]))[0]
        np.testing.assert_allclose(hidden[row][batch.attention_mask[row].astype(bool)], alone, atol=1e-9)


def test_gte_gates_the_second_half_of_up_gate_proj(gte_dir: Path, tmp_path: Path) -> None:
    """[up; gate]: swapping the halves is a different model (the gate's GELU moves)."""
    target = _copy(gte_dir, tmp_path / "swapped")
    (target / "model.safetensors").unlink()
    tensors = load_file(str(gte_dir / "model.safetensors"))
    for layer in range(GTE.layers):
        name = f"encoder.layer.{layer}.mlp.up_gate_proj.weight"
        up, gate = np.split(tensors[name], 2)
        tensors[name] = np.ascontiguousarray(np.concatenate([gate, up]))
    save_file(tensors, str(target / "model.safetensors"))
    a, b = (reference.embed(d, TEXTS, pooling="cls") for d in (gte_dir, target))
    assert float(np.min(np.sum(a * b, axis=1))) < 0.999


@pytest.mark.parametrize(
    "config", [{"rope_scaling": {"type": "ntk", "factor": 2.0}}, {"logn_attention_scale": True}]
)
def test_gte_what_is_not_covered_is_refused(gte_dir: Path, tmp_path: Path, config: dict[str, object]) -> None:
    other = _copy(gte_dir, tmp_path / "uncovered", config)
    with pytest.raises(ValueError, match="does not cover"):
        reference.embed(other, TEXTS[:1])
