"""Before a CUDA router starts: does it have the flash-attention kernel the model needs?

A router built with only some kernels (``pytei build --flash-attn-head-dims`` or
``--flash-attn-for``) refuses, at its warm-up, a model whose head dim, dtype or causality it
was not built for (pytei's candle patch 0001).  That refusal costs the start-up (up to a
minute of weights and PTX) and ends in a backtrace; pytei knows the answer from the build's
manifest and the model's config.json and says it first, in one line, with the rebuild command.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytei.build.attention import Attention, read_attention
from pytei.build.cuda import FlashSelection
from pytei.errors import ModelError
from pytei.models.resolve import ModelDir

__all__ = ["FLASH_MODEL_TYPES", "check_flash_kernels"]

# The config.json model types TEI's candle backend runs with flash attention on CUDA (in
# float16: with another dtype the encoders take their non-flash path, and the decoders refuse
# on their own).
FLASH_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "new", "gte", "modernbert", "nomic_bert",
     "mistral", "qwen2", "qwen3"}
)  # fmt: skip


def _missing(selection: FlashSelection, attention: Attention) -> list[str]:
    missing = []
    kernel = attention.kernel_head_dim
    built = {Attention(d, False).kernel_head_dim for d in selection.head_dims}
    if selection.head_dims and (kernel is None or kernel not in built):
        missing.append(f"head dim {kernel or attention.head_dim} (the model's is {attention.head_dim})")
    if selection.dtypes and "fp16" not in selection.dtypes:
        missing.append("float16")
    if selection.causal != "both" and (selection.causal == "yes") != attention.causal:
        missing.append("causal attention" if attention.causal else "non-causal attention")
    return missing


def check_flash_kernels(model: ModelDir, *, build_env: Mapping[str, str], dtype: str, router: str) -> None:
    """Raise :class:`ModelError` when ``router`` (an install name) lacks the kernel ``model``
    needs; nothing for a full build, another dtype or a model TEI runs without flash attention."""
    selection = FlashSelection.from_env(build_env)
    if not selection.restricted or dtype != "float16" or model.model_type not in FLASH_MODEL_TYPES:
        return
    attention = read_attention(
        model.path, hint="check the model's config.json (hidden_size, num_attention_heads)"
    )
    missing = _missing(selection, attention)
    if missing:
        built = ",".join(str(d) for d in selection.head_dims) or "all"
        raise ModelError(
            f"router {router!r} has no flash-attention kernel for {model.path.name}: it lacks "
            f"{' and '.join(missing)} (built for head dims {built}, {','.join(selection.dtypes) or 'fp16,bf16'}, "
            f"causal={selection.causal})",
            hint=f"rebuild for this model: pytei build --profile {router.split('-fa', maxsplit=1)[0]} --flash-attn-for {model.path}",
        )
