"""TEI's tokenization with and without patch 0013's ids-only path, side by side on one thread.

Runs ``tei_fork/fast-wordpiece``'s ``compare`` example (release build): tokenizers'
``Tokenizer::encode`` as TEI calls it (truncation on, padding off, special tokens added) and
``FastWordPiece::encode_into`` on the same texts, in alternating rounds, after checking that
every text the fast path accepts gets the same ids and type ids. Corpora:

- ``gpu-128``: the texts of benchmarks/bench_gpu.py (whole vocabulary words, 128 tokens each);
- ``sentences``: benchmarks/results/cpu_peers.corpus.txt (2,000 English sentences, the CPU
  benchmarks' corpus);
- ``multilingual``: the sentences with accents, CJK, emoji and odd whitespace mixed in.

    python benchmarks/bench_tokenize.py [--model all-MiniLM-L6-v2] [--rounds 7]

Writes benchmarks/results/tokenize_fast_wordpiece.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CRATE = ROOT / "tei_fork" / "fast-wordpiece"
SENTENCES = ROOT / "benchmarks" / "results" / "cpu_peers.corpus.txt"
MIXINS = ["café", "Zürich", "naïve", "中文分词", "日本語", "한국어", "😀", "Ωμέγα", "\u00a0", "\t", "İstanbul", "Straße"]


def model_dir(name: str) -> Path:
    from pytei.cache import Cache
    from pytei.config import load_settings
    from pytei.models.resolve import resolve_model

    return resolve_model(name, Cache.from_settings(load_settings()), progress=False).path


def corpora(model: Path, scratch: Path) -> dict[str, Path]:
    import bench_gpu

    texts, _ = bench_gpu.token_texts(model, 2000, 128, seed=3)
    sentences = [s for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    rng = random.Random(0)
    mixed = [" ".join(w if rng.random() > 0.15 else rng.choice(MIXINS) for w in s.split(" ")) for s in sentences]
    found = {"gpu-128": texts, "sentences": sentences, "multilingual": mixed}
    paths = {}
    for name, lines in found.items():
        path = scratch / f"{name}.txt"
        path.write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n", encoding="utf-8")
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="catalogue name or model directory")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tokenize_fast_wordpiece.json")
    args = parser.parse_args()
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--example", "compare", "--manifest-path", str(CRATE / "Cargo.toml")],
        check=True,
    )
    binary = CRATE / "target" / "release" / "examples" / "compare"
    model = Path(args.model) if Path(args.model).is_dir() else model_dir(args.model)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "model": model.name,
        "what": "one thread; tokenizers' Tokenizer::encode (as TEI's encode_input calls it) vs patch 0013's path",
        "corpora": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name, path in corpora(model, Path(scratch)).items():
            done = subprocess.run(
                [str(binary), str(model / "tokenizer.json"), str(path), str(args.rounds)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads(done.stdout)
            report["corpora"][name] = result
            print(
                f"{name}: {result['texts']} texts of {result['tokens_per_text']} tokens, "
                f"{result['agree']} agree, {result['declined']} declined; tokenizers "
                f"{result['tokenizers_us_per_text']} us, fast {result['fast_us_per_text']} us a text: "
                f"{result['speedup']}x"
            )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
