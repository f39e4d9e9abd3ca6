"""A small upstream repository and fork definition, made with git for each test.

The upstream has a tagged release (the pin) and a later ``main`` whose changes exercise every
outcome of ``fork check``: a patch that still applies exactly, one that needs an offset, one
that needs fuzz, one that needs a 3-way merge, and one that conflicts.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

UPSTREAM_URL = "https://example.invalid/acme/tei"

FILES_V1 = {
    "Cargo.toml": """\
        [workspace]
        members = ["router"]
        resolver = "2"
        """,
    "rust-toolchain.toml": """\
        [toolchain]
        channel = "1.80.0"
        """,
    "router/Cargo.toml": """\
        [package]
        name = "text-embeddings-router"
        version = "1.0.0"

        [features]
        default = ["candle", "http", "dynamic-linking"]
        http = []
        grpc = []
        candle = []
        candle-cuda = ["candle"]
        candle-cuda-turing = ["candle"]
        candle-cuda-volta = ["candle"]
        ort = []
        mkl = []
        metal = []
        accelerate = []
        python = []
        google = []
        static-linking = []
        dynamic-linking = []
        """,
    "compute_cap.rs": "\n".join(
        ["fn compute_cap_matching(runtime: usize, compile: usize) -> bool {", "    match (runtime, compile) {"]
        + [f"        ({c}, {c}) => true," for c in (75, 80, 86, 89, 90, 100, 120)]
        + ["        (_, _) => false,", "    }", "}"]
        + [f"// line {i}" for i in range(40)]
    )
    + "\n",
    "build.rs": "\n".join(f"step_{i}();" for i in range(30)) + "\n",
    "lib.rs": "\n".join(
        [f"const A{i}: u32 = {i};" for i in range(12)] + ["// middle"] + [f"const B{i}: u32 = {i};" for i in range(12)]
    )
    + "\n",
    "conflict.rs": "fn value() -> u32 {\n    1\n}\n",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **(env or {}),
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=full, check=True, capture_output=True, text=True
    ).stdout.strip()


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def diff_of(repo: Path, edit: dict[str, str]) -> str:
    """A patch (git diff with full index lines) of ``edit`` against ``repo``'s HEAD."""
    write(repo, edit)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", "--full-index")
    git(repo, "reset", "-q", "--hard")
    return patch + "\n"


@dataclass
class FakeFork:
    upstream: Path  # a non-bare clone serving as the "mirror"
    fork_dir: Path  # holds tei_fork/ and patches/
    pin: str
    main: str

    @property
    def patches(self) -> Path:
        return self.fork_dir / "patches"

    def add_patch(self, name: str, text: str, header: str = "Subject: test patch\n\nWhy: testing.\n---\n") -> Path:
        path = self.patches / name
        path.write_text(header + text, encoding="utf-8")
        series = self.patches / "series"
        series.write_text(series.read_text(encoding="utf-8") + name + "\n", encoding="utf-8")
        return path

    def env(self) -> dict[str, str]:
        return {"PYTEI_FORK_DIR": str(self.fork_dir), "PYTEI_GIT_MIRRORS": f"{UPSTREAM_URL}={self.upstream}"}


def edited(name: str, old: str, new: str) -> dict[str, str]:
    text = FILES_V1[name]
    assert old in text
    return {name: text.replace(old, new)}


@pytest.fixture
def fake_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFork:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    write(upstream, FILES_V1)
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "v1")
    git(upstream, "tag", "v1.0.0")
    pin = git(upstream, "rev-parse", "HEAD")

    fork_dir = tmp_path / "fork"
    crate = fork_dir / "tei_fork" / "extra"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "extra"\nversion = "0.1.0"\n', encoding="utf-8")
    (crate / "src" / "lib.rs").write_text("pub fn extra() {}\n", encoding="utf-8")
    (fork_dir / "tei_fork" / "fork.toml").write_text(
        textwrap.dedent(
            f"""\
            [upstream]
            url = "{UPSTREAM_URL}.git"
            tag = "v1.0.0"
            commit = "{pin}"

            [[crate]]
            name = "extra"
            source = "extra"
            dest = "pytei/extra"
            """
        ),
        encoding="utf-8",
    )
    (fork_dir / "patches").mkdir()
    (fork_dir / "patches" / "series").write_text("# test series\n", encoding="utf-8")
    fork = FakeFork(upstream, fork_dir, pin, "")

    # The series at the pin: each patch touches a different file.
    sm87 = edited("compute_cap.rs", "        (89, 89)", "        (87, 87) => true,\n        (89, 89)")
    fork.add_patch("0001-sm87.patch", diff_of(upstream, sm87))
    fork.add_patch("0002-build-flag.patch", diff_of(upstream, edited("build.rs", "step_15();", "step_15();\nflag();")))
    two_changes = FILES_V1["lib.rs"].replace("const A10: u32 = 10;", "const A10: u32 = 100;").replace(
        "const B1: u32 = 1;", "const B1: u32 = 11;"
    )
    fork.add_patch("0003-lib.patch", diff_of(upstream, {"lib.rs": two_changes}))
    fork.add_patch("0004-conflict.patch", diff_of(upstream, edited("conflict.rs", "    1\n", "    2\n")))

    # Upstream moves on: offsets, fuzz, a 3-way-only change and a conflict.
    later = dict(FILES_V1)
    later["build.rs"] = "// new header\n// more\n" + FILES_V1["build.rs"]  # 0002 needs an offset
    later["compute_cap.rs"] = FILES_V1["compute_cap.rs"].replace(
        "        (90, 90) => true,", "        (90, 90) => true, // hopper"
    )  # 0001's trailing context changed: fuzz
    later["lib.rs"] = FILES_V1["lib.rs"].replace("// middle", "// the middle")  # between 0003's changes: 3-way
    later["conflict.rs"] = "fn value() -> u32 {\n    3\n}\n"  # the very line 0004 changes: conflict
    write(upstream, later)
    git(upstream, "commit", "-q", "-am", "later")
    fork.main = git(upstream, "rev-parse", "HEAD")
    for key, value in fork.env().items():
        monkeypatch.setenv(key, value)
    return fork
