"""Accuracy on human judgements, offline: the Lee document-similarity set.

Parity with a reference says a router computes what the weights compute; it cannot say whether a
quantized graph or a wrong pooling still ranks documents the way people do.  The Lee, Pincombe
& Welsh (2005) set can: 50 news documents and the mean similarity rating of every pair, 1,225
pairs.  It ships inside gensim's wheel (``gensim/test/test_data``), the only human-rated
similarity set found on PyPI, so pytei downloads that wheel like its model wheels, checks its
sha256, and takes the two files out (it never imports gensim).

Three figures per model: Pearson and Spearman correlation of cosine similarity with the ratings
over the 1,225 pairs, and nDCG@10 with each document as a query over the other 49 (ratings as
graded gains).  all-MiniLM-L6-v2 in fp32 scores Pearson 0.656 and nDCG@10 0.869; random vectors
score nDCG@10 0.588, so a broken router is far off while int8 quantization moves it by < 0.01.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pytei.cache import Cache, atomic_dir, sha256_file
from pytei.errors import ModelError
from pytei.models.resolve import download_wheel

__all__ = ["LEE_FILES", "LEE_WHEEL", "LeeScore", "LeeSet", "lee_score", "lee_set", "score_embedder"]

LEE_WHEEL = "gensim==4.4.0"
LEE_WHEEL_SHA256 = "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"
# The wheel is per platform; its data files are not, so one pinned platform serves every machine.
LEE_PLATFORM = ("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64")
LEE_FILES: Mapping[str, str] = {
    "lee.cor": "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
    "similarities0-1.txt": "23762bc6b728897144dda3d324a2c032dc1e059e1009806226d64b6dd123ed79",
}
_PREFIX = "gensim/test/test_data/"
_DOCUMENTS = 50

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LeeSet:
    documents: tuple[str, ...]
    ratings: FloatArray  # [50, 50], symmetric, 1 on the diagonal


@dataclass(frozen=True)
class LeeScore:
    pearson: float
    spearman: float
    ndcg10: float

    def as_dict(self) -> dict[str, float]:
        return {
            "pearson": round(self.pearson, 4),
            "spearman": round(self.spearman, 4),
            "ndcg10": round(self.ndcg10, 4),
        }


def lee_set(cache: Cache, env: Mapping[str, str] | None = None) -> LeeSet:
    """The Lee set from gensim's wheel, unpacked once into the cache and checked."""
    target = cache.root / "datasets" / "lee"
    if not all((target / name).is_file() for name in LEE_FILES):
        with cache.lock("dataset-lee"):
            if not all((target / name).is_file() for name in LEE_FILES):
                wheel = download_wheel(LEE_WHEEL, LEE_WHEEL_SHA256, cache, env, platform_args=LEE_PLATFORM)
                with atomic_dir(target) as scratch, zipfile.ZipFile(wheel) as archive:
                    for name, digest in LEE_FILES.items():
                        (scratch / name).write_bytes(archive.read(_PREFIX + name))
                        if sha256_file(scratch / name) != digest:
                            raise ModelError(
                                f"{name} in {wheel.name} does not have the expected sha256",
                                hint="re-download the wheel (delete it from pytei's wheel cache)",
                            )
    return parse_lee(target / "lee.cor", target / "similarities0-1.txt")


def parse_lee(corpus: Path, similarities: Path) -> LeeSet:
    # The corpus is Latin-1 (pound signs), one document per line.
    documents = tuple(
        line.strip() for line in corpus.read_text(encoding="latin-1").splitlines() if line.strip()
    )
    upper = np.loadtxt(similarities, dtype=np.float64)
    if len(documents) != _DOCUMENTS or upper.shape != (_DOCUMENTS, _DOCUMENTS):
        raise ModelError(
            f"the Lee set has {len(documents)} documents and a {upper.shape} rating table, not 50 and 50x50",
            hint="the dataset files are not gensim 4.4.0's; delete pytei's datasets/lee cache",
        )
    # The file holds the upper triangle (zeros below); mirror it.
    ratings = np.triu(upper) + np.triu(upper, 1).T
    return LeeSet(documents, ratings)


def _ranks(values: FloatArray) -> FloatArray:
    """Ranks from 1, ties sharing their mean rank (what Spearman's rho needs)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return np.asarray((sums / counts)[inverse], dtype=np.float64)


def _pearson(a: FloatArray, b: FloatArray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _ndcg_at(similarity: FloatArray, ratings: FloatArray, k: int) -> float:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for query in range(len(ratings)):
        others = np.array([d for d in range(len(ratings)) if d != query])
        gains = ratings[query, others]
        ranked = others[np.argsort(-similarity[query, others], kind="mergesort")[:k]]
        ideal = np.sort(gains)[::-1][:k]
        scores.append(float(ratings[query, ranked] @ discounts) / float(ideal @ discounts))
    return float(np.mean(scores))


def lee_score(embeddings: npt.ArrayLike, lee: LeeSet) -> LeeScore:
    """How well the cosine similarities of ``embeddings`` (one row per document) follow the ratings."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.shape[0] != len(lee.documents) or vectors.ndim != 2:
        raise ValueError(f"expected {len(lee.documents)} embeddings, got an array of shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        return LeeScore(float("nan"), float("nan"), float("nan"))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    upper = np.triu_indices(len(lee.documents), 1)
    predicted, human = similarity[upper], lee.ratings[upper]
    return LeeScore(
        pearson=_pearson(predicted, human),
        spearman=_pearson(_ranks(predicted), _ranks(human)),
        ndcg10=_ndcg_at(similarity, lee.ratings, 10),
    )


def score_embedder(
    embed: Callable[[Sequence[str]], npt.ArrayLike], lee: LeeSet, *, batch: int = 16
) -> LeeScore:
    """Embed the 50 documents with ``embed`` (e.g. ``Client.embed`` or ``LocalEngine.embed``)
    in batches, and score them."""
    rows: list[npt.ArrayLike] = []
    for start in range(0, len(lee.documents), batch):
        rows.extend(np.asarray(embed(list(lee.documents[start : start + batch]))))
    return lee_score(np.asarray(rows), lee)
