"""Rotary position embeddings as transformers' ``rotate_half`` models apply them (Qwen3,
NomicBert, GTE...): the head's two halves rotated by angles ``position * base**(-2i/dim)``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["cos_sin", "rotate_half_rotary"]

Array = npt.NDArray[Any]


def cos_sin(positions: Array, size: int, base: float, dtype: npt.DTypeLike) -> tuple[Array, Array]:
    """``cos`` and ``sin`` ``[batch, 1, seq, size]`` for integer ``positions`` ``[batch, seq]``."""
    inv_freq = 1.0 / base ** (np.arange(0, size, 2, dtype=np.float64) / size)
    angles = positions[..., None].astype(np.float64) * inv_freq  # [batch, seq, size/2]
    angles = np.concatenate([angles, angles], axis=-1)[:, None]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate_half_rotary(x: Array, cos: Array, sin: Array) -> Array:
    """Rotary embedding on ``[batch, heads, seq, dim]`` with ``cos``/``sin`` ``[batch, 1, seq, dim]``."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return np.asarray(x * cos + rotated * sin)
