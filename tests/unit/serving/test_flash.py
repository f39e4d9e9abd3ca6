"""check_flash_kernels: a CUDA router built with some flash-attention kernels, and the models it
can or cannot serve, decided before the router starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytei.build.attention import Attention
from pytei.build.cuda import FlashSelection
from pytei.errors import ModelError
from pytei.models.resolve import ModelDir
from pytei.serving.flash import check_flash_kernels

# what `pytei build --flash-attn-head-dims 32,64 --flash-attn-dtypes fp16` (encoders) records
BUILT = FlashSelection((32, 64), ("fp16",), "no").env()


def model(tmp_path: Path, *, hidden: int, heads: int, model_type: str = "bert", arch: str = "BertModel") -> ModelDir:
    path = tmp_path / f"{model_type}-{hidden}-{heads}"
    path.mkdir()
    config = {"model_type": model_type, "architectures": [arch], "hidden_size": hidden, "num_attention_heads": heads}
    (path / "config.json").write_text(json.dumps(config))
    return ModelDir(path, (arch,), model_type, ("model.safetensors",), None, "mean")


@pytest.mark.parametrize(("hidden", "heads"), [(384, 12), (768, 12), (1024, 16), (768, 16)])
def test_head_dims_the_router_has_pass(tmp_path: Path, hidden: int, heads: int) -> None:
    # 32, 64, 64 and 48 (which runs on the 64 kernel)
    check_flash_kernels(model(tmp_path, hidden=hidden, heads=heads), build_env=BUILT, dtype="float16", router="r")


def test_a_missing_head_dim_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    big = model(tmp_path, hidden=1024, heads=8)
    with pytest.raises(ModelError) as caught:
        check_flash_kernels(big, build_env=BUILT, dtype="float16", router="cuda-hopper-fa32.64-fp16-noncausal")
    assert str(caught.value.message) == (
        "router 'cuda-hopper-fa32.64-fp16-noncausal' has no flash-attention kernel for bert-1024-8: it lacks "
        "head dim 128 (the model's is 128) (built for head dims 32,64, fp16, causal=no)"
    )
    assert caught.value.hint == f"rebuild for this model: pytei build --profile cuda-hopper --flash-attn-for {big.path}"


def test_dtype_and_causality_are_checked_too(tmp_path: Path) -> None:
    bf16_only = FlashSelection((64,), ("bf16",), "no").env()
    with pytest.raises(ModelError, match="it lacks float16"):
        check_flash_kernels(model(tmp_path, hidden=768, heads=12), build_env=bf16_only, dtype="float16", router="r")
    decoder = model(tmp_path, hidden=1024, heads=16, model_type="qwen2", arch="Qwen2Model")
    with pytest.raises(ModelError, match="it lacks causal attention"):
        check_flash_kernels(decoder, build_env=BUILT, dtype="float16", router="r")


def test_nothing_is_refused_where_flash_attention_is_not_used(tmp_path: Path) -> None:
    big = model(tmp_path, hidden=1024, heads=8)
    check_flash_kernels(big, build_env={}, dtype="float16", router="r")  # a full build
    check_flash_kernels(big, build_env=BUILT, dtype="bfloat16", router="r")  # TEI's non-flash BERT
    other = model(tmp_path, hidden=1024, heads=8, model_type="deberta-v2", arch="DebertaV2Model")
    check_flash_kernels(other, build_env=BUILT, dtype="float16", router="r")


def test_the_selection_round_trips_through_the_manifest_env() -> None:
    selection = FlashSelection((32, 64), ("fp16",), "no")
    assert FlashSelection.from_env(selection.env()) == selection
    assert FlashSelection.from_env({}) == FlashSelection()
    assert not FlashSelection.from_env({}).restricted


@pytest.mark.parametrize(("head_dim", "kernel"), [(32, 32), (48, 64), (80, 96), (256, 256), (300, None)])
def test_a_head_dim_runs_on_the_smallest_kernel_at_least_as_large(head_dim: int, kernel: int | None) -> None:
    assert Attention(head_dim, False).kernel_head_dim == kernel
