"""A model's attention as flash-attention sees it: the head size and whether it is causal.

Shared by the build (which kernels to compile for the intended models, ``--flash-attn-for``)
and the serving stage (whether an installed router has the kernel a model needs); it lives in
the build stage because the build comes first in pytei's data flow.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytei.errors import ModelError

__all__ = ["FLASH_KERNEL_HEAD_DIMS", "Attention", "attention_of", "read_attention"]

# The head dims flash-attention v2 has kernels for; a model's head dim runs on the smallest one
# at least as large (candle-flash-attn's HEADDIM_SWITCH).
FLASH_KERNEL_HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)
_DECODER_ARCHITECTURES = re.compile(r"Qwen|Llama|Mistral|Gemma|Phi")


@dataclass(frozen=True)
class Attention:
    head_dim: int
    causal: bool

    @property
    def kernel_head_dim(self) -> int | None:
        """The kernel this head dim runs on; None above 256 (no flash-attention kernel)."""
        return next((d for d in FLASH_KERNEL_HEAD_DIMS if d >= self.head_dim), None)


def attention_of(config: dict[str, Any]) -> Attention:
    """Head dim = ``head_dim`` or ``hidden_size / num_attention_heads``; decoders (``is_decoder``,
    Qwen/Llama/Mistral/Gemma/Phi architectures) attend causally, encoders not."""
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    architectures = " ".join(config.get("architectures") or [])
    causal = bool(config.get("is_decoder")) or bool(_DECODER_ARCHITECTURES.search(architectures))
    return Attention(head_dim, causal)


def read_attention(model: Path, *, hint: str) -> Attention:
    """:func:`attention_of` a model directory (or its config.json); ``hint`` says what to do
    when the config does not tell."""
    path = model / "config.json" if model.is_dir() else model
    try:
        return attention_of(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise ModelError(
            f"cannot read the attention head size from {path} ({type(exc).__name__}: {exc})", hint=hint
        ) from exc
