"""`pytei fork check --ref`: per patch, per file, per hunk; upstreamed patches; short shas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pytei.cache import Cache
from pytei.config import load_settings
from pytei.fork.upstream import ForkOptions, Upstream
from tests.support.fake_fork import FILES_V1, FakeFork, diff_of, git, write


def make_upstream() -> Upstream:
    settings = load_settings(env=dict(os.environ))
    return Upstream(ForkOptions.from_settings(settings), Cache(Path(os.environ["PYTEI_HOME"])))


def advance(fork: FakeFork, files: dict[str, str], message: str) -> str:
    """A new upstream commit on top of main with ``files`` changed."""
    write(fork.upstream, files)
    git(fork.upstream, "add", "-A")
    git(fork.upstream, "commit", "-q", "-m", message)
    return git(fork.upstream, "rev-parse", "HEAD")


def test_a_patch_failing_in_two_files_reports_both_with_their_hunks(fake_fork: FakeFork) -> None:
    # A patch touching two files, each of which upstream later changed on the same lines.
    git(fake_fork.upstream, "checkout", "-q", fake_fork.pin)
    two = {
        "lib.rs": FILES_V1["lib.rs"].replace("const A3: u32 = 3;", "const A3: u32 = 33;"),
        "conflict.rs": "fn value() -> u32 {\n    7\n}\n",
    }
    fake_fork.add_patch("0005-two-files.patch", diff_of(fake_fork.upstream, two))
    git(fake_fork.upstream, "checkout", "-q", "main")
    later = {"lib.rs": FILES_V1["lib.rs"].replace("const A3: u32 = 3;", "const A3: u32 = 300;")}
    advance(fake_fork, later, "both files move")
    _, trials = make_upstream().check("main")
    trial = {t.patch: t for t in trials}["0005-two-files.patch"]
    assert trial.outcome == "fails"
    outcomes = {f.file: f.outcome for f in trial.files}
    assert outcomes == {"lib.rs": "conflict", "conflict.rs": "conflict"}
    lib = next(f for f in trial.files if f.file == "lib.rs")
    assert [h.outcome for h in lib.hunks] == ["failed"] and lib.hunks[0].line is not None
    assert "lib.rs: conflict" in trial.detail and "conflict.rs: conflict" in trial.detail
    # The command names both files, and --json carries every hunk.
    env = {**os.environ}
    shown = subprocess.run([sys.executable, "-m", "pytei", "fork", "check", "--ref", "main"], env=env, capture_output=True, text=True, check=False)
    assert shown.returncode == 8
    assert "lib.rs: conflict" in shown.stdout and "conflict.rs: conflict" in shown.stdout
    assert "0005-two-files.patch (lib.rs, conflict.rs)" in shown.stderr or "0005-two-files.patch (conflict.rs, lib.rs)" in shown.stderr
    as_json = subprocess.run([sys.executable, "-m", "pytei", "fork", "check", "--ref", "main", "--json"], env=env, capture_output=True, text=True, check=False)
    data = {p["patch"]: p for p in json.loads(as_json.stdout)["patches"]}
    assert data["0005-two-files.patch"]["files"][0]["hunks"][0]["outcome"] == "failed"


def test_a_patch_upstream_already_has_is_named_droppable(fake_fork: FakeFork) -> None:
    # Upstream takes 0002's change itself (as TEI main did with the metrics bump of 0004).
    build = (fake_fork.upstream / "build.rs").read_text().replace("step_15();", "step_15();\nflag();")
    advance(fake_fork, {"build.rs": build}, "upstream adopts the flag")
    _, trials = make_upstream().check("main")
    trial = {t.patch: t for t in trials}["0002-build-flag.patch"]
    assert trial.outcome == "upstream" and trial.applied
    assert trial.detail == "already applied upstream (can be dropped)"
    assert [f.outcome for f in trial.files] == ["upstream"]


def test_a_short_sha_resolves_like_any_rev(fake_fork: FakeFork) -> None:
    commit, _ = make_upstream().check(fake_fork.main[:7])
    assert commit == fake_fork.main


def test_offsets_and_fuzz_are_reported_per_hunk(fake_fork: FakeFork) -> None:
    _, trials = make_upstream().check("main")
    by = {t.patch: t for t in trials}
    [flag] = by["0002-build-flag.patch"].files
    assert flag.outcome == "offset" and flag.hunks[0].offset == 2
    [cap] = by["0001-sm87.patch"].files
    assert cap.outcome == "fuzz" and cap.hunks[0].fuzz >= 1
    lib = by["0003-lib.patch"].files[0]
    assert lib.outcome == "3way-merged" and by["0003-lib.patch"].outcome == "3way"


def test_status_after_a_build_shows_the_build_tree(fake_fork: FakeFork) -> None:
    upstream = make_upstream()
    upstream.fetch()
    commit = upstream.series_commit()
    tree = upstream.cache.root / "builds" / "cpu" / "src"
    tree.parent.mkdir(parents=True)
    upstream.git.run("worktree", "add", "--detach", "--quiet", str(tree), commit)
    (tree / "Cargo.toml").write_text((tree / "Cargo.toml").read_text())  # untouched
    lock = tree / "Cargo.lock"
    lock.write_text("# rewritten by cargo\n")  # every build does this; not an edit of the series
    status = upstream.status()
    assert status.worktree == str(tree) and "last build" in status.worktree_kind
    assert status.head == commit and status.up_to_date
    assert {p.state for p in status.patches} == {"applied"} and status.edits == []


def test_a_refreshed_series_applies_exactly_on_that_ref(fake_fork: FakeFork, tmp_path: Path) -> None:
    series = fake_fork.patches / "series"
    series.write_text(series.read_text().replace("0004-conflict.patch\n", ""))  # the one that fails
    into = tmp_path / "refreshed"
    commit, trials, refreshed = make_upstream().check_and_refresh("main", into)
    assert {t.patch: t.outcome for t in trials} == {
        "0001-sm87.patch": "fuzz",
        "0002-build-flag.patch": "offset",
        "0003-lib.patch": "3way",
    }
    assert refreshed is not None and refreshed.series == ("0001-sm87.patch", "0002-build-flag.patch", "0003-lib.patch")
    assert set(refreshed.rewritten) == {"0001-sm87.patch", "0002-build-flag.patch", "0003-lib.patch"}
    sm87 = (into / "0001-sm87.patch").read_text()
    assert sm87.startswith("Subject: test patch\n\nWhy: testing.\nRefreshed: for main (") and "from a fuzz application" in sm87
    # The refreshed series, pinned at main, applies exactly: every patch clean, none lenient.
    for item in into.iterdir():
        (fake_fork.patches / item.name).write_bytes(item.read_bytes())
    definition = fake_fork.fork_dir / "tei_fork" / "fork.toml"
    definition.write_text(definition.read_text().replace(fake_fork.pin, commit))
    _, again = make_upstream().check(None)
    assert [t.outcome for t in again] == ["clean", "clean", "clean"]
    assert make_upstream().series_commit()  # and the build's own (exact) application works


def test_nothing_is_refreshed_when_a_patch_does_not_apply(fake_fork: FakeFork, tmp_path: Path) -> None:
    into = tmp_path / "refreshed"
    done = subprocess.run(
        [sys.executable, "-m", "pytei", "fork", "check", "--ref", "main", "--refresh-into", str(into)],
        env=dict(os.environ), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 8 and "0004-conflict.patch" in done.stderr
    assert not into.exists()
