"""Input rules every back-end follows (see :mod:`pytei.engine.protocol`), checked before any
request is made or any native call is entered.

- texts: one ``str`` or a sequence of them; ``bytes`` are taken as UTF-8; anything else is a
  ``TypeError`` naming the position;
- a text that cannot be encoded as UTF-8 (a lone surrogate, or ``surrogateescape``-decoded
  bytes) is a :class:`~pytei.errors.TEIValidationError` naming the text and the character;
- ``truncation_direction`` is ``"left"`` or ``"right"`` (any case);
- ``predict`` inputs are a text or a ``(text, text)`` pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pytei.engine.protocol import Texts
from pytei.errors import TEIValidationError

__all__ = ["check_encodable", "predict_parts", "text_list", "truncation_side"]


def _as_text(item: object, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | bytearray):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TEIValidationError(
                f"{where} is bytes that are not UTF-8 (byte {exc.start}: {bytes(item)[exc.start : exc.start + 1]!r})",
                hint="decode the bytes yourself (e.g. data.decode('latin-1')) and pass str",
            ) from None
    raise TypeError(f"{where} is {type(item).__name__}, not str")


def text_list(texts: Texts | bytes, what: str = "texts") -> list[str]:
    """The texts as a list of str (one text -> a list of one), each encodable as UTF-8."""
    if isinstance(texts, str | bytes | bytearray):
        items = [_as_text(texts, what)]
        check_encodable(items, what, single=True)
        return items
    items = [_as_text(text, f"{what}[{i}]") for i, text in enumerate(texts)]
    check_encodable(items, what)
    return items


def check_encodable(items: Sequence[str], what: str = "texts", *, single: bool = False) -> None:
    """Raise :class:`TEIValidationError` for the first text UTF-8 cannot encode, naming the text
    and the character (instead of an offset into a request body, or a native conversion error).

    Only non-ASCII texts are encoded to check (``isascii`` is O(1) in CPython), so the usual
    case costs nothing measurable.
    """
    for index, text in enumerate(items):
        if text.isascii():
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = text[exc.start]
            where = what if single else f"{what}[{index}]"
            raise TEIValidationError(
                f"{where} is not valid Unicode: {char!a} at position {exc.start} is a lone "
                "surrogate (text decoded with errors='surrogateescape'?)",
                hint="decode the source bytes with the right encoding, or errors='replace'",
            ) from None


def truncation_side(value: object) -> Literal["left", "right"] | None:
    """``"Left"``/``"left"`` -> ``"left"``; None stays None; anything else is a ValueError."""
    if value is None:
        return None
    side = value.lower() if isinstance(value, str) else None  # untyped callers pass anything
    if side == "left":
        return "left"
    if side == "right":
        return "right"
    raise ValueError(f"truncation_direction must be 'left' or 'right', not {value!r}")


def predict_parts(item: object, i: int) -> list[str]:
    """One predict input as ``[text]`` or ``[text_a, text_b]``."""
    if isinstance(item, str):
        return [item]
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(s, str) for s in item):
        return [item[0], item[1]]
    raise TypeError(f"inputs[{i}] must be a str or a (str, str) pair, not {item!r:.60}")
