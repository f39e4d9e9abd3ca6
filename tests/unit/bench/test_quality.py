"""The Lee document-similarity set: fetched from gensim's wheel, parsed, and scored as measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytei.bench.quality import LeeSet, lee_score, lee_set, parse_lee, score_embedder
from pytei.cache import Cache
from pytei.errors import ModelError
from pytei.models.reference import forward
from pytei.models.resolve import packaged_model_dir
from pytei.models.weights import Batch
from tests.support.model_fixtures import shared_model_cache


@pytest.fixture(scope="module")
def lee() -> LeeSet:
    try:
        return lee_set(shared_model_cache())
    except ModelError as exc:
        pytest.skip(f"gensim's wheel is not available ({exc.message})")


def test_the_set_is_fifty_documents_and_a_symmetric_rating_table(lee: LeeSet) -> None:
    assert len(lee.documents) == 50 and len(set(lee.documents)) == 50
    assert any("£" in doc for doc in lee.documents)  # read as Latin-1, not mangled
    assert np.array_equal(lee.ratings, lee.ratings.T)
    assert np.all(np.diag(lee.ratings) == 1.0)
    upper = lee.ratings[np.triu_indices(50, 1)]
    assert len(upper) == 1225 and upper.min() > 0.0 and upper.max() <= 1.0


def test_minilm_scores_what_was_measured_and_random_vectors_do_not(lee: LeeSet) -> None:
    cache = shared_model_cache()
    try:
        model = packaged_model_dir("all-MiniLM-L6-v2", cache)
    except ModelError as exc:
        pytest.skip(f"the packaged MiniLM is not available ({exc.message})")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_padding()  # its tokenizer.json pads to 128: pads must not enter the mean
    tokenizer.enable_truncation(256)

    def embed(texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
            rows.append(
                forward(model, Batch(ids, np.ones_like(ids), np.zeros_like(ids)), "encoder")[0].mean(0)
            )
        return np.array(rows)

    score = score_embedder(embed, lee, batch=25)
    # ../shared/docs/ecosystem.md section 4.2: Pearson 0.6564, nDCG@10 0.8686 (Spearman 0.5058 there
    # with another tie rule; average ranks give 0.5083)
    assert score.pearson == pytest.approx(0.6564, abs=5e-4)
    assert score.ndcg10 == pytest.approx(0.8686, abs=5e-4)
    assert score.spearman == pytest.approx(0.508, abs=3e-3)
    noise = lee_score(np.random.default_rng(0).standard_normal((50, 384)), lee)
    assert noise.ndcg10 == pytest.approx(0.5879, abs=5e-4)
    assert abs(noise.pearson) < 0.1


def test_the_ratings_themselves_score_perfectly_and_nan_is_not_a_score(lee: LeeSet) -> None:
    # Embeddings whose cosine matrix is the rating matrix (its symmetric square root) rank
    # every query ideally.
    values, vectors = np.linalg.eigh(lee.ratings)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    ideal = lee_score(root / np.linalg.norm(root, axis=1, keepdims=True), lee)
    assert ideal.ndcg10 > 0.99
    broken = np.ones((50, 8))
    broken[3, 2] = np.nan
    assert np.isnan(lee_score(broken, lee).pearson)
    with pytest.raises(ValueError, match="expected 50 embeddings"):
        lee_score(np.ones((49, 8)), lee)


def test_a_damaged_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    corpus, ratings = tmp_path / "lee.cor", tmp_path / "similarities0-1.txt"
    corpus.write_text("one document\nanother\n", encoding="latin-1")
    ratings.write_text("1 0.5\n0 1\n")
    with pytest.raises(ModelError, match="not 50 and 50x50") as caught:
        parse_lee(corpus, ratings)
    assert "datasets/lee" in (caught.value.hint or "")


def test_a_wheel_with_other_bytes_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from pytei.bench import quality

    wheel = tmp_path / "gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in quality.LEE_FILES:
            archive.writestr(f"gensim/test/test_data/{name}", "tampered")
    monkeypatch.setattr(quality, "download_wheel", lambda *a, **k: wheel)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ModelError, match="expected sha256"):
        quality.lee_set(cache)
    assert not (cache.root / "datasets" / "lee").exists()
