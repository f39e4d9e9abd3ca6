"""The API key: read in one place, one header, redacted from everything pytei keeps."""

from __future__ import annotations

import json

import pytest

from pytei._secrets import REDACTED, Redactor, bearer_headers, read_api_key

KEYS = ["plain-key", 'q"uo\\te', "$(rm -rf /)`x`;|&", ".*+?[]{}()^$|\\d", "%s%d{0}", "clé-ünïcode"]


def args_line(key: str | None) -> str:
    shown = "None" if key is None else 'Some("' + key.replace("\\", "\\\\").replace('"', '\\"') + '")'
    return f'INFO text_embeddings_router: Args {{ model_id: "m", api_key: {shown}, json_output: false }}'


@pytest.mark.parametrize("key", KEYS)
def test_teis_args_line_is_redacted_whatever_the_key(key: str) -> None:
    # Without knowing the key (a router pytei did not start with it), by TEI's field.
    assert Redactor()(args_line(key)) == args_line(None).replace("None", f'Some("{REDACTED}")')
    # In TEI's JSON log format the field sits inside a JSON string.
    redacted = Redactor()(json.dumps({"message": args_line(key)}))
    assert json.loads(redacted)["message"] == args_line(None).replace("None", f'Some("{REDACTED}")')


@pytest.mark.parametrize("key", KEYS)
def test_a_known_key_is_redacted_anywhere_in_every_escaped_form(key: str) -> None:
    debug = key.replace("\\", "\\\\").replace('"', '\\"')
    text = f"raw={key} debug={debug} json={json.dumps(key)} json-debug={json.dumps(debug)}"
    out = Redactor([key])(text)
    for form in (key, debug, json.dumps(key)[1:-1]):
        assert form not in out
    assert out.count(REDACTED) >= 4


def test_none_and_unrelated_text_stay() -> None:
    line = args_line(None)
    assert Redactor(["secret"])(line) == line
    assert Redactor([""])("nothing to hide") == "nothing to hide"


def test_read_and_header() -> None:
    env = {"PYTEI_API_KEY": "from-env"}
    assert read_api_key(None, env) == "from-env"
    assert read_api_key("given", env) == "given"
    assert read_api_key("", env) is None  # "" means: no key, whatever the environment says
    assert read_api_key(None, {}) is None
    assert bearer_headers("k") == {"Authorization": "Bearer k"} and bearer_headers(None) == {}
