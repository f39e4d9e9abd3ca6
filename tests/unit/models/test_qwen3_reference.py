"""pytei's numpy Qwen3 reference: the properties a decoder's forward pass must have.

TEI's own Qwen3 (candle) agreeing with it is the matrix's job (upstream tier); these tests pin
what can be checked without a second implementation: causality, padding on either side, the
grouped-query sharing, the rotary embedding's relative-position property, both checkpoint
layouts, and last-token pooling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pytei.models import reference
from pytei.models.qwen3 import is_qwen3, qwen3_hidden
from pytei.models.rotary import rotate_half_rotary
from pytei.models.weights import encode_batch
from tests.support.tiny_models import TinySpec, write_tiny_model

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world", "what is deep learning ?"]
SPEC = TinySpec(arch="qwen3", hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=96, layers=2)


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("qwen3") / "model", SPEC, seed=3)


def _hidden(model: Path, text: str) -> np.ndarray:
    return qwen3_hidden(model, encode_batch(model, [text]))[0]


def test_the_tiny_model_is_what_tei_reads(qwen3_dir: Path) -> None:
    config = json.loads((qwen3_dir / "config.json").read_text(encoding="utf-8"))
    # the fields TEI's Qwen3Config requires (serde fails on a missing one)
    for key in ("attention_bias", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "hidden_act", "max_position_embeddings",
                "rms_norm_eps", "rope_theta", "use_sliding_window", "eos_token_id"):  # fmt: skip
        assert key in config, key
    assert is_qwen3(qwen3_dir) and not is_qwen3(qwen3_dir / "missing")
    ids = encode_batch(qwen3_dir, ["hello world"]).input_ids[0].tolist()
    assert ids[-1] == config["eos_token_id"] and len(ids) == 3  # <|endoftext|> appended


def test_causal_a_prefix_does_not_see_what_follows(qwen3_dir: Path) -> None:
    full, prefix = _hidden(qwen3_dir, "the quick brown fox"), _hidden(qwen3_dir, "the quick")
    np.testing.assert_allclose(full[:2], prefix[:2], atol=1e-10)


def test_bidirectional_attention_sees_the_whole_text(qwen3_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "bidi"
    other.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (other / name).symlink_to(qwen3_dir / name)
    config = json.loads((qwen3_dir / "config.json").read_text(encoding="utf-8"))
    (other / "config.json").write_text(json.dumps({**config, "use_bidirectional_attention": True}), encoding="utf-8")
    full, prefix = _hidden(other, "the quick brown fox"), _hidden(other, "the quick")
    assert np.abs(full[:2] - prefix[:2]).max() > 1e-3


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_row_equals_the_text_alone(qwen3_dir: Path, side: str) -> None:
    batch = encode_batch(qwen3_dir, TEXTS, padding_side=side)  # type: ignore[arg-type]
    hidden = qwen3_hidden(qwen3_dir, batch)
    for row, text in enumerate(TEXTS):
        alone = _hidden(qwen3_dir, text)
        real = batch.attention_mask[row].astype(bool)
        np.testing.assert_allclose(hidden[row][real], alone, atol=1e-9)


def test_grouped_query_attention_equals_full_heads_with_shared_weights(qwen3_dir: Path, tmp_path: Path) -> None:
    """Each pair of query heads reads one key/value head: duplicating the key/value weights per
    query head (kv_heads = heads) must give the same states."""
    full = tmp_path / "mha"
    full.mkdir()
    config = json.loads((qwen3_dir / "config.json").read_text(encoding="utf-8"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (full / name).symlink_to(qwen3_dir / name)
    (full / "config.json").write_text(json.dumps({**config, "num_key_value_heads": config["num_attention_heads"]}), encoding="utf-8")
    tensors = load_file(str(qwen3_dir / "model.safetensors"))
    size, group = config["head_dim"], config["num_attention_heads"] // config["num_key_value_heads"]
    for name, weight in list(tensors.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            heads = weight.reshape(-1, size, weight.shape[1])
            tensors[name] = np.repeat(heads, group, axis=0).reshape(-1, weight.shape[1])
    save_file(tensors, str(full / "model.safetensors"))
    np.testing.assert_allclose(_hidden(full, TEXTS[0]), _hidden(qwen3_dir, TEXTS[0]), atol=1e-9)


def test_rotary_scores_depend_on_the_distance_only() -> None:
    rng = np.random.default_rng(0)
    size = 16
    q, k = rng.standard_normal((1, 1, 1, size)), rng.standard_normal((1, 1, 1, size))
    inv = 1.0 / 10000.0 ** (np.arange(0, size, 2) / size)

    def at(x: np.ndarray, position: int) -> np.ndarray:
        angles = np.concatenate([position * inv, position * inv])[None, None, None]
        return rotate_half_rotary(x, np.cos(angles), np.sin(angles))

    def score(m: int, n: int) -> float:
        return float((at(q, m) * at(k, n)).sum())

    assert score(7, 3) == pytest.approx(score(24, 20), rel=1e-9)
    assert score(7, 3) != pytest.approx(score(7, 4), rel=1e-3)


def test_a_model_prefixed_checkpoint_reads_the_same(qwen3_dir: Path, tmp_path: Path) -> None:
    prefixed = tmp_path / "causal-lm"
    prefixed.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (prefixed / name).symlink_to(qwen3_dir / name)
    tensors = {f"model.{k}": v for k, v in load_file(str(qwen3_dir / "model.safetensors")).items()}
    save_file(tensors, str(prefixed / "model.safetensors"))
    np.testing.assert_array_equal(_hidden(prefixed, TEXTS[1]), _hidden(qwen3_dir, TEXTS[1]))


def test_pooled_embeddings(qwen3_dir: Path) -> None:
    last = reference.embed(qwen3_dir, TEXTS, pooling="last-token", normalize=False)
    mean = reference.embed(qwen3_dir, TEXTS, pooling="mean", normalize=False)
    for row, text in enumerate(TEXTS):
        hidden = _hidden(qwen3_dir, text)
        np.testing.assert_allclose(last[row], hidden[-1], atol=1e-5)  # the <|endoftext|> state
        np.testing.assert_allclose(mean[row], hidden.mean(axis=0), atol=1e-5)
    normed = reference.embed(qwen3_dir, TEXTS, pooling="last-token")
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-6)


def test_heads_other_than_the_encoder_are_refused(qwen3_dir: Path) -> None:
    with pytest.raises(ValueError, match="hidden states only"):
        reference.forward(qwen3_dir, encode_batch(qwen3_dir, TEXTS[:1]), "mlm")
