"""Writing a model directory's files as transformers saves them (shared by the tiny-model writers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.numpy import save_file

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

__all__ = ["write_model_files"]


def write_model_files(
    out: Path,
    config: dict[str, Any],
    tensors: dict[str, np.ndarray],
    tokenizer: Tokenizer,
    tokenizer_config: dict[str, Any],
) -> Path:
    """tokenizer.json, tokenizer_config.json, config.json and model.safetensors into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
