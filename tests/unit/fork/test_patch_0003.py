"""Static checks of patch 0003 (sparse embeddings from the ort backend) and its crate.

No upstream, no build: the patch file, the series, fork.toml and tei_fork/sparse-pool are read
as text. Whether the patch applies and works is the upstream tier's job
(tests/integration/test_sparse_ort.py, `pytei fork check`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from pytei.fork.definition import Patch, load_fork

ROOT = Path(__file__).resolve().parents[3]
NAME = "0003-ort-sparse-embeddings.patch"
ENV = "TEI_ORT_SPARSE_OUTPUT"
# What the patch may touch: the ort backend (the feature), the router gate, candle's load-time
# refusal that replaces it, the Pool doc line shown by --help, and the lock entry of the crate.
EXPECTED_FILES = {
    "Cargo.lock",
    "backends/candle/src/lib.rs",
    "backends/core/src/lib.rs",
    "backends/ort/Cargo.toml",
    "backends/ort/src/lib.rs",
    "router/src/lib.rs",
}


@pytest.fixture(scope="module")
def patch() -> Patch:
    return load_fork(ROOT).patch(NAME)


@pytest.fixture(scope="module")
def diff(patch: Patch) -> str:
    text = patch.path.read_text(encoding="utf-8")
    return text[text.index("diff --git ") :]


def added_lines(diff: str, file: str | None = None) -> list[str]:
    lines: list[str] = []
    current = None
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            current = line.split(" b/", 1)[1]
        elif line.startswith("+") and not line.startswith("+++") and (file is None or current == file):
            lines.append(line[1:])
    return lines


def removed_lines(diff: str) -> list[str]:
    return [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]


def test_series_order_puts_0003_between_0002_and_0004() -> None:
    names = [p.name.split("-", 1)[0] for p in load_fork(ROOT).patches]
    assert names[:4] == ["0001", "0002", "0003", "0004"]
    assert names == sorted(names)


def test_header_explains_why_what_and_how_it_was_verified(patch: Patch) -> None:
    header = patch.header
    assert header.startswith("Subject: ort: ")
    for section in ("Why:", "What:", "Verified:"):
        assert re.search(rf"^{section}", header, re.MULTILINE), section
    # The setting a user needs, and the upstream context.
    assert ENV in header
    for reference in ("#129", "#289", "#141", "#899"):
        assert reference in header, reference
    assert header.rstrip().endswith("---")


def test_diff_touches_only_the_expected_files(patch: Patch) -> None:
    assert set(patch.files) == EXPECTED_FILES
    # pytei copies its crates in before the series; the patch must never carry them.
    assert not any(f.startswith("pytei/") for f in patch.files)


def test_the_path_dependency_points_at_the_crate_pytei_copies_in(diff: str) -> None:
    fork = tomllib.loads((ROOT / "tei_fork" / "fork.toml").read_text(encoding="utf-8"))
    crate = next(c for c in fork["crate"] if c["name"] == "tei-sparse-pool")
    dependency = [line for line in added_lines(diff, "backends/ort/Cargo.toml") if "tei-sparse-pool" in line]
    assert len(dependency) == 1
    path = re.search(r'path\s*=\s*"([^"]+)"', dependency[0])
    assert path is not None
    resolved = PurePosixPath("backends/ort", path.group(1))
    # Normalise ../ by hand (PurePosixPath keeps them).
    parts: list[str] = []
    for part in resolved.parts:
        if part == "..":
            parts.pop()
        else:
            parts.append(part)
    assert "/".join(parts) == crate["dest"]


def test_lock_entry_lists_the_crates_own_dependencies(diff: str) -> None:
    manifest = tomllib.loads((ROOT / "tei_fork" / "sparse-pool" / "Cargo.toml").read_text(encoding="utf-8"))
    lock = "\n".join(added_lines(diff, "Cargo.lock"))
    entry = re.search(
        r'name = "tei-sparse-pool"\nversion = "([^"]+)"\ndependencies = \[\n(.*?)\n\]', lock, re.DOTALL
    )
    assert entry is not None, lock
    assert entry.group(1) == manifest["package"]["version"]
    locked = {line.strip().strip('",').split(" ")[0] for line in entry.group(2).splitlines()}
    assert locked == set(manifest["dependencies"])
    # The ort backend depends on it.
    assert ' "tei-sparse-pool",' in lock.splitlines()


def test_nothing_added_can_abort_at_request_time(diff: str) -> None:
    # Release builds abort on panic: the patch adds no panicking call to the ort backend, and
    # removes the `Pool::Splade => unreachable!()` arm and the "use candle" refusal.
    added = "\n".join(added_lines(diff, "backends/ort/src/lib.rs"))
    for token in ("unreachable!", "panic!", ".unwrap()", ".expect(", "todo!", "unimplemented!"):
        assert token not in added, token
    removed = "\n".join(removed_lines(diff))
    assert "Pool::Splade => unreachable!()" in removed
    assert "use `candle` instead" in removed


def test_the_setting_and_the_default_names_agree_with_the_crate(diff: str) -> None:
    added = "\n".join(added_lines(diff, "backends/ort/src/lib.rs"))
    assert f'SPARSE_OUTPUT_ENV: &str = "{ENV}"' in added
    lib = (ROOT / "tei_fork" / "sparse-pool" / "src" / "lib.rs").read_text(encoding="utf-8")
    assert 'DEFAULT_OUTPUT_NAMES: [&str; 3] = ["logits", "sparse_embeddings", "token_weights"]' in lib
    # What the patch calls exists in the crate, with an optional vocab size.
    for name in ("pub fn select_output", "pub fn from_output", "pub fn pool("):
        assert name in lib, name
    assert "vocab_size: Option<usize>" in lib
    specials = (ROOT / "tei_fork" / "sparse-pool" / "src" / "specials.rs").read_text(encoding="utf-8")
    assert "pub fn special_token_ids" in specials
