"""Token specs, exact-length synthetic texts, input files, request bodies and /info checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from pytei.bench.texts import (
    _WORDS,
    LocalTokenizer,
    RouterTokenizer,
    TokenSpec,
    read_texts,
    synthetic_texts,
)
from pytei.bench.workloads import build_workload, check_against_info
from pytei.errors import BenchError

if TYPE_CHECKING:
    from tests.unit.bench.conftest import FakeTEI


def _wordpiece(tmp_path: Path) -> Path:
    """A BERT-style tokenizer.json: [CLS] ... [SEP], some words split into pieces."""
    whole = list(dict.fromkeys(_WORDS))[:80]
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for piece in [*whole, "gar", "##den", "win", "##ter", "riv", "##er"]:
        vocab.setdefault(piece, len(vocab))
    for word in ("garden", "winter", "river"):
        vocab.pop(word, None)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


class _QuirkyCounter:
    """Like a byte-level BPE without a prefix space: the first word of a text costs 2 tokens."""

    source = "quirky"

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + (1 if t.split() else 0) + 1 for t in texts]

    def count_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[int] | None:
        return None

    def special_tokens(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("text", "kind", "values"),
    [
        ("32", "fixed", (32.0,)),
        ("16:256", "uniform", (16.0, 256.0)),
        ("normal:128,32", "normal", (128.0, 32.0)),
        ("32,64,128", "choice", (32.0, 64.0, 128.0)),
    ],
)
def test_token_spec_forms(text: str, kind: str, values: tuple[float, ...]) -> None:
    spec = TokenSpec.parse(text)
    assert (spec.kind, spec.values) == (kind, values)


@pytest.mark.parametrize("text", ["0", "abc", "9:3", "normal:1", "normal:-5,2", "4,0", ""])
def test_token_spec_errors(text: str) -> None:
    with pytest.raises(BenchError):
        TokenSpec.parse(text)


def test_token_spec_sampling() -> None:
    rng = np.random.default_rng(0)
    uniform = TokenSpec.parse("16:64").sample(rng, 5000)
    assert min(uniform) == 16 and max(uniform) == 64
    normal = TokenSpec.parse("normal:128,16").sample(rng, 5000)
    assert np.mean(normal) == pytest.approx(128, abs=1.5) and min(normal) >= 1
    assert set(TokenSpec.parse("8,32").sample(rng, 200)) == {8, 32}
    assert TokenSpec.parse("7").sample(rng, 3) == [7, 7, 7]


def test_synthetic_texts_are_exact_with_a_local_tokenizer(tmp_path: Path) -> None:
    counter = LocalTokenizer(_wordpiece(tmp_path))
    assert counter.special_tokens() == 2
    lengths = [3, 5, 17, 64, 200]
    texts = synthetic_texts(lengths, counter, np.random.default_rng(1))
    assert counter.count(texts) == lengths
    # Words this tokenizer splits are not used, so the count is right the first time.
    assert not any(w in t.split() for t in texts for w in ("garden", "winter", "river"))
    pairs = counter.count_pairs([("hello world", texts[0])])
    assert pairs == [len(counter._tokenizer.encode("hello world", texts[0]).ids)]


def test_synthetic_texts_adjust_until_exact() -> None:
    counter = _QuirkyCounter()
    lengths = [4, 10, 33]
    texts = synthetic_texts(lengths, counter, np.random.default_rng(2))
    assert counter.count(texts) == lengths


def test_synthetic_texts_through_the_routers_tokenize(fake_tei: FakeTEI) -> None:
    counter = RouterTokenizer(fake_tei.url, headers={}, batch=4)
    texts = synthetic_texts([3, 9, 40], counter, np.random.default_rng(3))
    assert [len(t.split()) + 2 for t in texts] == [3, 9, 40]
    assert fake_tei.paths["POST /tokenize"] >= 2


def test_too_short_a_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="special tokens"):
        synthetic_texts([2], LocalTokenizer(_wordpiece(tmp_path)), np.random.default_rng(0))


def test_read_texts_txt_and_jsonl(tmp_path: Path) -> None:
    txt = tmp_path / "in.txt"
    txt.write_text("first line\n\n  second line  \n", encoding="utf-8")
    assert read_texts(txt) == ["first line", "second line"]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('"plain string"\n{"text": "from an object", "id": 3}\n', encoding="utf-8")
    assert read_texts(jsonl) == ["plain string", "from an object"]


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"text": "ok"}\nnot json\n', "in.jsonl:2"), ('{"body": "x"}\n', "in.jsonl:1"), ("\n\n", "no texts")],
)
def test_read_texts_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BenchError, match=message):
        read_texts(path)


def _bodies(task: str, batch: int, **kwargs: Any) -> list[dict[str, Any]]:
    workload = build_workload(task, ["a b", "c d e", "f"], batch_size=batch, bodies=8, **kwargs)
    return [json.loads(b) for b in workload.bodies]


def test_bodies_per_task() -> None:
    assert all(isinstance(b["inputs"], str) for b in _bodies("embed", 1))
    assert all(len(b["inputs"]) == 4 for b in _bodies("embed_sparse", 4))
    rerank = _bodies("rerank", 3, query="q?")
    assert all(b["query"] == "q?" and len(b["texts"]) == 3 for b in rerank)
    single = _bodies("predict", 1)
    assert all(isinstance(b["inputs"], str) for b in single)
    pairs = _bodies("predict", 2, query="q?", pairs=True)
    assert all(len(b["inputs"]) == 2 and b["inputs"][0][0] == "q?" for b in pairs)
    batch = _bodies("predict", 2)
    assert all(len(item) == 1 for b in batch for item in b["inputs"])
    openai = _bodies("openai", 2, model="m")
    assert all(b["model"] == "m" and len(b["input"]) == 2 for b in openai)
    assert all(b["truncate"] is True for b in _bodies("embed", 1, truncate=True))


def test_tokens_per_request() -> None:
    workload = build_workload("embed", ["a", "b b", "c c c"], batch_size=2, text_tokens=[3, 4, 5], bodies=16)
    bodies = [json.loads(b)["inputs"] for b in workload.bodies]
    expected = [sum(len(t.split()) + 2 for t in texts) for texts in bodies]
    assert list(workload.tokens) == expected
    assert workload.tokens_known
    unknown = build_workload("rerank", ["a"], batch_size=1, query="q", bodies=2)
    assert not unknown.tokens_known and set(unknown.tokens) == {0}


def test_rerank_tokens_come_from_pairs(tmp_path: Path) -> None:
    counter = LocalTokenizer(_wordpiece(tmp_path))
    workload = build_workload(
        "rerank", ["the city", "of"], batch_size=1, query="the", counter=counter, bodies=4
    )
    assert workload.tokens_known
    for body, tokens in zip(workload.bodies, workload.tokens, strict=True):
        doc = json.loads(body)["texts"][0]
        pair_tokens = counter.count_pairs([("the", doc)])
        assert pair_tokens is not None
        assert tokens == pair_tokens[0]


def test_info_checks(fake_tei: FakeTEI) -> None:
    info = fake_tei.info
    check_against_info(info, task="embed", batch_size=32, max_tokens=256, truncate=False)
    with pytest.raises(BenchError, match="max_client_batch_size"):
        check_against_info(info, task="embed", batch_size=33, max_tokens=16, truncate=False)
    with pytest.raises(BenchError, match="max_input_length"):
        check_against_info(info, task="embed", batch_size=1, max_tokens=257, truncate=False)
    check_against_info(info, task="embed", batch_size=1, max_tokens=1000, truncate=True)
    with pytest.raises(BenchError, match="reranker"):
        check_against_info(info, task="rerank", batch_size=1, max_tokens=16, truncate=False)
    with pytest.raises(BenchError, match="SPLADE"):
        check_against_info(info, task="embed_sparse", batch_size=1, max_tokens=16, truncate=False)
    with pytest.raises(BenchError, match="classifier"):
        check_against_info(info, task="predict", batch_size=1, max_tokens=16, truncate=False)
    check_against_info(None, task="rerank", batch_size=999, max_tokens=10**6, truncate=False)
