"""A CUDA router on a GPU, side by side with PyTorch on the same GPU and the same token batches.

Run on the GPU machine (torch and transformers there; the router and models unpacked by
benchmarks/gpu_carry.py into ``PYTEI_HOME``).  For each model, in one process:

1. PyTorch fp16 with SDPA attention (transformers' ``AutoModel``), timed from token ids on the
   host to pooled, normalized embeddings on the host (what TEI's ``inference_time`` covers):
   batch 1x128 latency and 256x128 throughput, CUDA-synchronized wall clock, median of repeats.
2. TEI through ``pytei``'s own serving path (the CUDA libraries, the device check, the JIT
   cache): parity of its embeddings with the numpy reference of the same float16 weights
   (cosine >= 0.9999, no NaN); its forward time from its own log (``inference_time`` in
   microseconds: the x-inference-time header has whole milliseconds only).  For 1x128 that is
   one request, one batch.  A 256-text request is not one batch in TEI (texts join the queue as
   tokenizer workers finish them, and the batcher takes what is there), so the 256x128 forward
   time is read from batches TEI formed itself: 1024 one-text requests kept in flight, with
   ``--max-batch-tokens 32768``, fill its batches to 256 texts, and each one-text request's
   logged ``inference_time`` is its batch's (texts of one batch share the value to the
   nanosecond, which groups them into batches).  Requests of 256 texts at several concurrencies
   give the HTTP throughput (tokens over wall time, with the mean batch size TEI formed, from
   its ``te_batch_next_size`` metric); sequential single requests give the p50, divided both
   by the separate 1x128 forward median and by the median logged forward time of those same
   requests (``http_single_p50_vs_its_own_forward``: the same seconds, no drift between phases).
3. Host-side settings (``--tokenization-workers``, ``--max-batch-tokens``) swept on the first
   model to find where the HTTP path loses to the forward pass.

Random-weight models of BERT-base and BERT-large shape are written on the machine itself
(``--random base,large``) with MiniLM's tokenizer.  Writes ``<out>/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tei_router import device_line, forward_only, over_http, tei, timing

from pytei.client import Client
from pytei.models import reference, weights

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped above a sleepy hound.",
    "Stock markets fell sharply on Monday after the central bank's announcement.",
    "How do I bake sourdough bread at home?",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "short",
    "Embeddings map text to vectors; similar meanings end up close together.",
    " ".join(["a long input that is repeated to fill many positions"] * 20),
]
SHAPES = {  # all-MiniLM-L6-v2's, bge-base-en-v1.5's and bge-reranker-large's encoder shapes
    "minilm": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    # head dim 128: a router built for head dims 32 and 64 must refuse it at load time
    "hd128": {
        "hidden_size": 1024,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "intermediate_size": 1024,
    },
}
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- models and token batches ------------------------------------------------------------------


def random_model(out: Path, shape: str, tokenizer_from: Path, seed: int = 0) -> Path:
    """A random-weight BertModel of ``shape`` in float16 safetensors, with ``tokenizer_from``'s files."""
    import torch
    from transformers import BertConfig, BertModel

    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(seed)
    base = json.loads((tokenizer_from / "config.json").read_text())
    config = BertConfig(vocab_size=base["vocab_size"], max_position_embeddings=512, **SHAPES[shape])
    model = BertModel(config, add_pooling_layer=False).half()
    model.save_pretrained(out)  # safetensors
    names = (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "1_Pooling/config.json",
    )
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes((tokenizer_from / name).read_bytes())
    return out


def token_texts(model_dir: Path, rows: int, length: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``rows`` texts of whole-word vocabulary entries that tokenize to exactly ``length`` ids
    ([CLS] and [SEP] included), and those ids: both back-ends see the same tokens."""
    from tokenizers import Tokenizer

    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = [w for w in vocab if w.isalpha() and w.isascii() and w.islower() and len(w) > 2]
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(words, size=length - 2)) for _ in range(rows)]
    encodings = tokenizer.encode_batch(texts)
    if any(len(e.ids) != length for e in encodings):
        raise SystemExit(f"{model_dir}: the probe texts do not tokenize to {length} ids")
    return texts, np.array([e.ids for e in encodings], dtype=np.int64)


# --- PyTorch -------------------------------------------------------------------------------------


def torch_embedder(model_dir: Path) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    """PyTorch fp16 SDPA: the model, and ids on the host -> mean-pooled, normalized embeddings
    on the host (what TEI's ``inference_time`` covers)."""
    import torch
    from transformers import AutoModel

    model = (
        AutoModel.from_pretrained(model_dir, dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
    )

    def run(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tokens = torch.from_numpy(ids).cuda(non_blocking=False)
            mask = torch.ones_like(tokens)
            hidden = model(input_ids=tokens, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            out: np.ndarray = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            return out

    return model, run


def torch_side(model_dir: Path, batches: dict[str, np.ndarray], repeats: dict[str, int]) -> dict[str, Any]:
    import torch

    model, run = torch_embedder(model_dir)
    results: dict[str, Any] = {"torch": torch.__version__, "attention": model.config._attn_implementation}
    for name, ids in batches.items():
        for _ in range(5):
            run(ids)
        times = []
        for _ in range(repeats[name]):
            torch.cuda.synchronize()
            started = time.perf_counter()
            run(ids)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - started) * 1e3)
        results[name] = timing(times, ids.size)
    # the parity sentences, tokenized as the reference and TEI do (truncated to the model's
    # limit, not tokenizer.json's), for context: transformers computes gelu exactly (erf)
    encodings = weights.tokenize(model_dir, SENTENCES)
    rows = [run(np.array([e.ids], dtype=np.int64))[0] for e in encodings]
    reference_rows = reference.embed(model_dir, SENTENCES, pooling="mean", normalize=True)
    cosines = np.sum(np.stack(rows) * reference_rows, axis=1)
    results["parity_cosines_vs_reference_erf"] = [round(float(c), 6) for c in cosines]
    return results


def parity(url: str, model_dir: Path) -> dict[str, Any]:
    with Client(url) as client:
        got = client.embed(SENTENCES, normalize=False).vectors
        info = client.info()
    want = reference.embed(model_dir, SENTENCES, pooling="mean", normalize=False, gelu="tanh")
    finite = bool(np.all(np.isfinite(got)))
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return {
        "finite": finite,
        "min_cosine": float(np.min(cos)) if finite else float("nan"),
        "max_abs_error": float(np.max(np.abs(got - want))) if finite else float("nan"),
        "passes": finite and float(np.min(cos)) >= 0.9999,
        "served_as": f"{info.kind}, pooling {info.pooling}",
    }


# Router settings compared on the first model (--sweep): TEI's defaults are 16384 batch tokens
# and one tokenization worker per core.
_COMMON = ["--max-client-batch-size", "256", "--max-concurrent-requests", "2048"]
SETTINGS = {
    "default": [*_COMMON, "--max-batch-tokens", "32768"],
    "batch-tokens=16384": [*_COMMON, "--max-batch-tokens", "16384"],
    "batch-tokens=65536": [*_COMMON, "--max-batch-tokens", "65536"],
    "workers=4": [*_COMMON, "--max-batch-tokens", "32768", "--tokenization-workers", "4"],
    "workers=8": [*_COMMON, "--max-batch-tokens", "32768", "--tokenization-workers", "8"],
    "workers=16": [*_COMMON, "--max-batch-tokens", "32768", "--tokenization-workers", "16"],
    # the same router with patches 0012 (memory pool), 0013 (fast tokenization), 0014 (short
    # single texts tokenized where awaited), 0015 (the queue under a lock) and 0016 (row gathers
    # for embedding lookups, mean pooling) switched off through their environment variables, one
    # at a time and together: what each one is worth (0013 off takes 0014's path with it)
    "before-0012-0013": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0012": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0013": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0014": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0015": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0016": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0016-lookup": [*_COMMON, "--max-batch-tokens", "32768"],
    "without-0016-pool": [*_COMMON, "--max-batch-tokens", "32768"],
}
_POOL_OFF = {"TEI_CUDA_POOL_RELEASE_THRESHOLD": "0"}
_FAST_OFF = {"TEI_FAST_TOKENIZER": "0"}
_INLINE_OFF = {"TEI_FAST_TOKENIZER_INLINE_BYTES": "0"}
_QUEUE_THREAD = {"TEI_QUEUE_THREAD": "1"}
_LOOKUP_BY_CANDLE = {"TEI_EMBEDDING_LOOKUP": "candle"}
_POOL_BY_MATMUL = {"TEI_MEAN_POOL": "matmul"}
SETTING_ENV = {
    "before-0012-0013": {**_POOL_OFF, **_FAST_OFF},
    "without-0012": _POOL_OFF,
    "without-0013": _FAST_OFF,
    "without-0014": _INLINE_OFF,
    "without-0015": _QUEUE_THREAD,
    "without-0016": {**_LOOKUP_BY_CANDLE, **_POOL_BY_MATMUL},
    "without-0016-lookup": _LOOKUP_BY_CANDLE,
    "without-0016-pool": _POOL_BY_MATMUL,
}
# Settings that measure the forward pass too (the others only the HTTP path).
FORWARD_SETTINGS = ("default", *SETTING_ENV)


def bench_model(
    model_dir: Path, profile: str, out: Path, *, labels: Sequence[str], pytorch: bool, quick: bool
) -> dict[str, Any]:
    single, single_ids = token_texts(model_dir, 1, 128, seed=1)
    _, big_ids = token_texts(model_dir, 256, 128, seed=2)
    load_texts, _ = token_texts(model_dir, 1024, 128, seed=3)
    repeats = {"1x128": 60 if quick else 200, "256x128": 10 if quick else 30}
    result: dict[str, Any] = {"model": model_dir.name}
    if pytorch:
        log(f"{model_dir.name}: PyTorch")
        result["pytorch"] = torch_side(model_dir, {"1x128": single_ids, "256x128": big_ids}, repeats)
        import torch

        torch.cuda.empty_cache()  # the router gets the memory PyTorch held
    result["tei"] = {}
    duration = 4.0 if quick else 6.0
    for label in labels:
        args = SETTINGS[label]
        log_path = out / f"router-{model_dir.name}-{label.replace('=', '')}.log"
        log(f"{model_dir.name}: TEI {label}")
        with (
            mock.patch.dict(os.environ, SETTING_ENV.get(label, {})),
            tei(model_dir, profile, args, log_path) as (url, ready_s),
        ):
            entry: dict[str, Any] = {
                "args": args,
                "env": SETTING_ENV.get(label, {}),
                "ready_s": round(ready_s, 1),
                "started": device_line(log_path),
            }
            if label in FORWARD_SETTINGS:
                entry["parity"] = parity(url, model_dir)
                entry["forward_1x128"] = forward_only(url, log_path, single, repeats["1x128"])
            entry["http"] = [
                over_http(url, load_texts, per, conc, duration, log_path)
                for per, conc in ((256, 2), (256, 4), (256, 8), (32, 64))
            ]
            # with the log: TEI's forward time of these same requests, a denominator for their p50
            # taken in the same seconds (the separate forward_1x128 phase drifts between phases)
            entry["http_single"] = over_http(url, single * 64, 1, 1, duration, log_path)
            if label in FORWARD_SETTINGS:
                entry["batched_singles"] = over_http(url, load_texts, 1, 1024, duration, log_path)
                full = entry["batched_singles"]["batches"].get("256")
                if not full:
                    raise RuntimeError(f"TEI formed no batch of 256: {entry['batched_singles']['batches']}")
                entry["forward_256x128"] = {
                    **full,
                    "tokens_per_s": round(256 * 128 / (full["median_ms"] / 1e3)),
                }
        result["tei"][label] = entry
    if "default" in result["tei"]:
        result["forward_256x128"] = result["tei"]["default"]["forward_256x128"]
    if pytorch:
        result["ratios"] = {
            label: ratios(result, label) for label in result["tei"] if label in FORWARD_SETTINGS
        }
        log(f"{model_dir.name}: {json.dumps(result['ratios'])}")
    return result


def ratios(result: dict[str, Any], label: str = "default") -> dict[str, float]:
    """The issue's four figures: TEI's forward against PyTorch's, HTTP against TEI's forward."""
    default, torch_ = result["tei"][label], result["pytorch"]
    forward_256 = default["forward_256x128"]["tokens_per_s"]
    best_http = max(r["tokens_per_s"] for r in default["http"])
    single = default["http_single"]
    same_requests = single.get("span_medians_ms", {}).get("inference_time")
    return {
        "forward_1x128_latency_vs_pytorch": default["forward_1x128"]["median_ms"]
        / torch_["1x128"]["median_ms"],
        "forward_256x128_throughput_vs_pytorch": forward_256 / torch_["256x128"]["tokens_per_s"],
        "http_256x128_throughput_vs_forward": best_http / forward_256,
        "http_single_p50_vs_forward": single["p50_ms"] / default["forward_1x128"]["median_ms"],
        **({"http_single_p50_vs_its_own_forward": single["p50_ms"] / same_requests} if same_requests else {}),
    }


def machine() -> dict[str, Any]:
    """The GPU (empty where there is no nvidia-smi: a CPU router's run), Python, cores."""
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except FileNotFoundError:
        gpu = ""
    return {"gpu": gpu, "python": platform.python_version(), "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", default=[], type=Path, help="a model directory (repeatable)"
    )
    parser.add_argument("--random", default="", help="random-weight shapes to add: base,large")
    parser.add_argument("--tokenizer-from", type=Path, help="the model whose tokenizer the random models use")
    parser.add_argument("--profile", default="cuda-hopper")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--settings",
        default="default",
        help=f"router settings to run on the first model, comma-separated, of: {', '.join(SETTINGS)}",
    )
    parser.add_argument(
        "--other-settings", default="default", help="router settings for the other models (as --settings)"
    )
    parser.add_argument("--skip-pytorch", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = list(args.model)
    for shape in filter(None, args.random.split(",")):
        source = args.tokenizer_from or models[0]
        models.append(random_model(Path(tempfile.gettempdir()) / f"random-bert-{shape}", shape, source))
    report: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": [],
    }
    path = args.out / "bench_gpu.json"
    for i, model_dir in enumerate(models):
        try:
            report["models"].append(
                bench_model(
                    model_dir,
                    args.profile,
                    args.out,
                    labels=args.settings.split(",") if i == 0 else args.other_settings.split(","),
                    pytorch=not args.skip_pytorch,
                    quick=args.quick,
                )
            )
        except Exception as exc:  # noqa: BLE001 (one model's failure must not lose the others' figures)
            log(f"{model_dir.name}: FAILED {type(exc).__name__}: {exc}")
            report["models"].append({"model": model_dir.name, "error": f"{type(exc).__name__}: {exc}"})
        path.write_text(json.dumps(report, indent=2))
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
