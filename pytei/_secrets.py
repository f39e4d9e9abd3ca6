"""The API key: read in one place, sent in one form, and kept out of everything pytei writes.

- :func:`read_api_key` is the only reader of ``PYTEI_API_KEY`` (an explicit value wins; an
  empty string means "no key" whatever the environment says);
- :func:`bearer_headers` is the only place the ``Authorization`` header is spelled;
- :class:`Redactor` removes keys from text pytei writes or shows (router logs, error tails):
  every literal key it was given, in the escaped forms TEI's logs use, and the
  ``api_key: Some("...")`` field of TEI's start-up ``Args`` whatever its value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

__all__ = ["API_KEY_ENV", "REDACTED", "Redactor", "bearer_headers", "read_api_key"]

API_KEY_ENV = "PYTEI_API_KEY"
REDACTED = "***"

# TEI prints its Args with Debug formatting: `api_key: Some("k\"ey")`; in JSON log lines
# that string sits inside a JSON string, so its quotes arrive escaped once more.
_ARGS_FIELD = re.compile(
    r"(api_key: Some\()"
    r'(?:"(?:[^"\\]|\\.)*"'  # plain-text log: Some("k\"ey")
    r'|\\"(?:[^"\\]|\\\\\\"|\\\\\\\\|\\\\[^"\\]|\\[^"\\])*\\")'  # in a JSON string: Some(\"k\\\"ey\")
    r"(\))"
)


def _redact_field(match: re.Match[str]) -> str:
    quote = '\\"' if match.group(0)[len(match.group(1))] == "\\" else '"'
    return f"{match.group(1)}{quote}{REDACTED}{quote}{match.group(2)}"


def read_api_key(given: str | None, env: Mapping[str, str]) -> str | None:
    """``given`` if not None ("" meaning none), else ``$PYTEI_API_KEY``; None when unset or empty."""
    value = env.get(API_KEY_ENV) if given is None else given
    return value or None


def bearer_headers(api_key: str | None) -> dict[str, str]:
    """The request headers that authenticate with ``api_key`` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _escaped_forms(secret: str) -> set[str]:
    debug = secret.replace("\\", "\\\\").replace('"', '\\"')  # Rust's Debug of a str (ASCII part)
    forms = {secret, debug, json.dumps(secret)[1:-1], json.dumps(debug)[1:-1]}
    return {form for form in forms if form}


class Redactor:
    """Replace secrets in text.  Literal keys are matched exactly, never as patterns, so a key
    full of regex or shell metacharacters is handled like any other."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _escaped_forms(secret)
        # Longest first, so a key that contains another key is replaced whole.
        self._literals = sorted(forms, key=len, reverse=True)
        self._literal_re = (
            re.compile("|".join(re.escape(form) for form in self._literals)) if self._literals else None
        )

    def __call__(self, text: str) -> str:
        text = _ARGS_FIELD.sub(_redact_field, text)
        if self._literal_re is not None:
            text = self._literal_re.sub(REDACTED, text)
        return text

    def __bool__(self) -> bool:
        return True
