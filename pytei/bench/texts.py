"""Benchmark inputs: token-length specs, token counting, synthetic texts and text files.

Synthetic texts have an exact token count *as TEI counts it*: special tokens included, with
the model's own tokenizer (``tokenizer.json`` through the ``tokenizers`` library) or, when no
tokenizer file is at hand, with the router's ``POST /tokenize``.  Texts are built from words
that the tokenizer keeps whole (one token each), then checked and adjusted until each text has
exactly its target count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import requests

from pytei.errors import BenchError

__all__ = [
    "LocalTokenizer",
    "RouterTokenizer",
    "TokenCounter",
    "TokenSpec",
    "read_texts",
    "synthetic_texts",
]

# Common English words; the tokenizer decides which of them are one token each.
_WORD_TEXT = """
the of and to in is was for on that with as by at from his her an are were which this be or
have has had not but all they their one can more other also new first time when who there
been would will two city so into up some any after its out about most could than only made
year over many may these world school such can where work life part them state use between
used water long house high small book under while both during last great year music people
light river game water night group power name family line south north east west land home
place story team good well way day man men women child early during order point number large
still city open field best show party hand head week case fact area money month road power
world paper human level local voice price table model value color green black white stone
market letter garden winter summer spring island bridge forest county church doctor teacher
student report energy system method result figure history nature simple common public social
music film radio dance metal glass paper cloth plant animal horse bird fish tree flower
"""
_WORDS = tuple(_WORD_TEXT.split())
_LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class TokenSpec:
    """How many tokens each synthetic text has.

    ``32`` (all 32), ``16:256`` (uniform in [16, 256]), ``normal:128,32`` (normal with mean
    128 and standard deviation 32, rounded and clipped to [1, 8192]) or ``32,64,128`` (each
    equally likely).
    """

    kind: Literal["fixed", "uniform", "normal", "choice"]
    values: tuple[float, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> TokenSpec:
        raw = text.strip().replace(" ", "")
        try:
            if raw.startswith("normal:"):
                mean, std = (float(v) for v in raw[len("normal:") :].split(","))
                if mean < 1 or std < 0:
                    raise ValueError
                return cls("normal", (mean, std), raw)
            if ":" in raw:
                low, high = (int(v) for v in raw.split(":"))
                if not 1 <= low <= high:
                    raise ValueError
                return cls("uniform", (float(low), float(high)), raw)
            if "," in raw:
                choices = tuple(float(int(v)) for v in raw.split(","))
                if min(choices) < 1:
                    raise ValueError
                return cls("choice", choices, raw)
            value = int(raw)
            if value < 1:
                raise ValueError
            return cls("fixed", (float(value),), raw)
        except ValueError:
            raise BenchError(
                f"bad token length {text!r}",
                hint="use N, LOW:HIGH, normal:MEAN,STD or N1,N2,... (all at least 1)",
            ) from None

    @property
    def maximum(self) -> int:
        if self.kind == "normal":
            return _NORMAL_CLIP
        return int(max(self.values))

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.kind == "fixed":
            return [int(self.values[0])] * n
        if self.kind == "uniform":
            return [int(v) for v in rng.integers(int(self.values[0]), int(self.values[1]) + 1, size=n)]
        if self.kind == "choice":
            return [int(v) for v in rng.choice(np.array(self.values), size=n)]
        mean, std = self.values
        drawn = np.clip(np.rint(rng.normal(mean, std, size=n)), 1, _NORMAL_CLIP)
        return [int(v) for v in drawn]


_NORMAL_CLIP = 8192


class TokenCounter(Protocol):
    """Counts tokens the way TEI does (special tokens included)."""

    source: str

    def count(self, texts: Sequence[str]) -> list[int]: ...

    def count_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[int] | None:
        """Tokens of each (first, second) pair as one input, or None when it cannot tell."""
        ...

    def special_tokens(self) -> int: ...


class LocalTokenizer:
    """The model's ``tokenizer.json``, read with the ``tokenizers`` library."""

    def __init__(self, path: Path) -> None:
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise BenchError(f"no tokenizer at {file}", hint="give the model directory or its tokenizer.json")
        try:
            from tokenizers import Tokenizer  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise BenchError(
                "counting tokens with a tokenizer file needs the `tokenizers` package",
                hint="pip install 'pytei[tokenizer]', or leave out --tokenizer to use the router's /tokenize",
            ) from exc
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # the library raises plain Exception for bad files
            raise BenchError(f"cannot read the tokenizer {file}: {exc}") from exc
        # Padding or truncation configured in the file would change the counts TEI sees.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.source = f"tokenizer:{file}"

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def count_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[int] | None:
        encoded = self._tokenizer.encode_batch([list(p) for p in pairs], add_special_tokens=True)
        return [len(e.ids) for e in encoded]

    def special_tokens(self) -> int:
        return int(sum(self._tokenizer.encode("hello", add_special_tokens=True).special_tokens_mask))


class RouterTokenizer:
    """The router's own ``POST /tokenize`` (batched to its ``max_client_batch_size``)."""

    def __init__(
        self, base_url: str, *, headers: dict[str, str], batch: int = 32, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.batch = max(1, batch)
        self.timeout = timeout
        self.source = "router:/tokenize"
        self._special: int | None = None

    def _tokenize(self, texts: Sequence[str]) -> list[list[Any]]:
        out: list[list[Any]] = []
        with requests.Session() as session:
            for start in range(0, len(texts), self.batch):
                chunk = list(texts[start : start + self.batch])
                try:
                    response = session.post(
                        f"{self.base_url}/tokenize",
                        json={"inputs": chunk, "add_special_tokens": True},
                        headers=self.headers,
                        timeout=self.timeout,
                    )
                except requests.RequestException as exc:
                    raise BenchError(f"POST {self.base_url}/tokenize failed: {exc}") from exc
                if response.status_code != 200:
                    raise BenchError(
                        f"POST {self.base_url}/tokenize answered {response.status_code}: "
                        f"{response.text[:200]}",
                        hint="give the model's tokenizer with --tokenizer PATH",
                    )
                try:
                    data = response.json()
                    if not (isinstance(data, list) and len(data) == len(chunk)):
                        raise ValueError("not one token list per input")
                except ValueError as exc:
                    raise BenchError(
                        f"{self.base_url}/tokenize did not answer like TEI ({exc})",
                        hint="give the model's tokenizer with --tokenizer PATH",
                    ) from exc
                out.extend(data)
        return out

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(tokens) for tokens in self._tokenize(texts)]

    def count_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[int] | None:
        return None  # /tokenize takes single texts only; the server's x-compute-tokens tells

    def special_tokens(self) -> int:
        if self._special is None:
            tokens = self._tokenize(["hello"])[0]
            self._special = sum(1 for t in tokens if isinstance(t, dict) and t.get("special"))
        return self._special


def _single_token_words(counter: TokenCounter, candidates: Sequence[str], special: int) -> list[str]:
    words = sorted(set(candidates))
    counts = counter.count(words)
    return [w for w, c in zip(words, counts, strict=True) if c == special + 1]


_MAX_ROUNDS = 8


def synthetic_texts(lengths: Sequence[int], counter: TokenCounter, rng: np.random.Generator) -> list[str]:
    """One text per target length, each exactly that many tokens long (special included)."""
    if not lengths:
        return []
    special = counter.special_tokens()
    shortest = special + 1
    if min(lengths) < shortest:
        raise BenchError(
            f"a text of {min(lengths)} tokens cannot be made: this tokenizer adds {special} special tokens",
            hint=f"ask for at least {shortest} tokens",
        )
    vocabulary = _single_token_words(counter, _WORDS, special)
    if len(vocabulary) < 8:
        # Few whole-word tokens (a character-level vocabulary): single letters are one token
        # in every vocabulary we know; failing that, the adjusting loop below does its best.
        vocabulary = _single_token_words(counter, _LETTERS, special) or sorted(set(_WORDS))
    words = [list(rng.choice(vocabulary, size=n - special)) for n in lengths]
    todo = list(range(len(lengths)))
    for _ in range(_MAX_ROUNDS):
        counts = counter.count([" ".join(words[i]) for i in todo])
        still = []
        for i, got in zip(todo, counts, strict=True):
            diff = lengths[i] - got
            if diff > 0:
                words[i].extend(rng.choice(vocabulary, size=diff))
            elif diff < 0:
                keep = max(1, len(words[i]) + diff)
                if keep == len(words[i]):
                    words[i] = list(rng.choice(vocabulary, size=keep))
                else:
                    del words[i][keep:]
            if diff:
                still.append(i)
        if not still:
            return [" ".join(w) for w in words]
        todo = still
    raise BenchError(
        f"could not make texts of exactly {sorted({lengths[i] for i in todo})[:5]} tokens "
        f"with {counter.source}",
        hint="use a token length this tokenizer can reach, or an --input-file",
    )


def read_texts(path: Path, *, limit: int = 100_000) -> list[str]:
    """Texts from a ``.txt`` file (one per line) or ``.jsonl`` (a string or {"text": ...} per line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read the input file {path}: {exc}") from exc
    texts: list[str] = []
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if jsonl:
            texts.append(_jsonl_text(path, number, line))
        else:
            texts.append(line.strip())
        if len(texts) >= limit:
            break
    if not texts:
        raise BenchError(f"the input file {path} has no texts", hint="one text per line (.txt) or .jsonl")
    return texts


def _jsonl_text(path: Path, number: int, line: str) -> str:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict) and isinstance(item.get("text"), str):
        text = item["text"]
    else:
        raise BenchError(f'{path}:{number}: expected a string or an object with "text"')
    if not text.strip():
        raise BenchError(f"{path}:{number}: empty text (TEI refuses empty inputs)")
    return text
