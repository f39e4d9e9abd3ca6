"""The patch engine against git repositories the tests make (no network, no real upstream)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytei.cache import Cache
from pytei.config import load_settings
from pytei.errors import CacheError, ForkDefinitionError, MirrorError, PatchError, UpstreamError
from pytei.fork.upstream import ForkOptions, Upstream
from tests.support.fake_fork import UPSTREAM_URL, FakeFork, diff_of, edited, git


def make_upstream(home: Path | None = None) -> Upstream:
    settings = load_settings(env=dict(os.environ))
    cache = Cache(home or Path(os.environ["PYTEI_HOME"]))
    return Upstream(ForkOptions.from_settings(settings), cache)


def tree_snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def pytei(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytei", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_fetch_uses_the_mirror_and_verifies_the_pin(fake_fork: FakeFork) -> None:
    upstream = make_upstream()
    source = upstream.fetch()
    assert source == str(fake_fork.upstream.resolve())
    assert upstream.git.has_commit(fake_fork.pin)
    # Fetching again reuses the cache.
    assert upstream.fetch() == source


def test_apply_builds_the_patched_worktree(fake_fork: FakeFork) -> None:
    upstream = make_upstream()
    head = upstream.apply()
    tree = upstream.worktree
    assert "(87, 87) => true," in (tree / "compute_cap.rs").read_text()
    assert "flag();" in (tree / "build.rs").read_text()
    assert (tree / "pytei" / "extra" / "src" / "lib.rs").is_file()
    status = upstream.status()
    assert status.up_to_date and status.head == head
    assert [p.state for p in status.patches] == ["applied"] * 4
    assert status.crates == {"extra": "applied"}
    assert status.edits == []


def test_patched_commit_is_reproducible_across_caches(fake_fork: FakeFork, tmp_path: Path) -> None:
    first = make_upstream(tmp_path / "a").apply()
    second = make_upstream(tmp_path / "b").apply()
    assert first == second


def test_failing_patch_leaves_worktree_exactly_as_before(fake_fork: FakeFork) -> None:
    upstream = make_upstream()
    head = upstream.apply()
    before = tree_snapshot(upstream.worktree)
    # A patch written for a different build.rs: its second hunk cannot apply.
    bad = diff_of(fake_fork.upstream, edited("build.rs", "step_2();", "step_2(); // x")).replace(
        "step_3();", "step_three();"
    )
    other = diff_of(fake_fork.upstream, edited("build.rs", "step_25();", "step_25(); // y"))
    fake_fork.add_patch("0005-bad.patch", bad.rstrip("\n") + "\n" + "\n".join(other.splitlines()[4:]) + "\n")
    with pytest.raises(PatchError) as info:
        make_upstream().apply()
    err = info.value
    assert err.patch == "0005-bad.patch"
    assert err.file == "build.rs"
    assert err.hunk == 1
    assert "0005-bad.patch" in str(err) and "build.rs" in str(err) and "hunk #1" in str(err)
    assert tree_snapshot(upstream.worktree) == before
    assert git(upstream.worktree, "rev-parse", "HEAD") == head
    assert git(upstream.worktree, "status", "--porcelain") == ""


def test_failing_patch_is_reported_by_status(fake_fork: FakeFork) -> None:
    make_upstream().apply()
    fake_fork.add_patch("0005-missing-file.patch", diff_of(fake_fork.upstream, {"lib.rs": "changed\n"}).replace(
        "lib.rs", "gone.rs"))
    status = make_upstream().status()
    states = {p.name: p.state for p in status.patches}
    assert states["0005-missing-file.patch"] == "failing"
    assert states["0001-sm87.patch"] == "applied"
    assert not status.up_to_date


def test_status_sees_edits_and_stale_patches(fake_fork: FakeFork) -> None:
    upstream = make_upstream()
    upstream.apply()
    (upstream.worktree / "lib.rs").write_text("edited by hand\n")
    (upstream.worktree / "new.txt").write_text("untracked\n")
    status = upstream.status()
    assert set(status.edits) == {"lib.rs", "new.txt"}
    with pytest.raises(PatchError, match="edits that are not in the series"):
        upstream.apply()
    upstream.apply(discard_edits=True)
    assert upstream.status().edits == []
    # Changing a patch's bytes makes it stale until re-applied.
    patch = fake_fork.patches / "0002-build-flag.patch"
    patch.write_text(patch.read_text().replace("Why: testing.", "Why: testing again."))
    stale = make_upstream().status()
    assert {p.name: p.state for p in stale.patches}["0002-build-flag.patch"] == "stale"
    make_upstream().apply()
    assert make_upstream().status().up_to_date


def test_check_against_a_later_ref_reports_each_outcome(fake_fork: FakeFork) -> None:
    commit, trials = make_upstream().check("main")
    assert commit == fake_fork.main
    outcomes = {t.patch: t.outcome for t in trials}
    assert outcomes == {
        "0001-sm87.patch": "fuzz",
        "0002-build-flag.patch": "offset",
        "0003-lib.patch": "3way",
        "0004-conflict.patch": "fails",
    }
    details = {t.patch: t for t in trials}
    assert "fuzz" in details["0001-sm87.patch"].detail
    assert "offset 2" in details["0002-build-flag.patch"].detail
    assert details["0004-conflict.patch"].file == "conflict.rs"
    assert details["0004-conflict.patch"].hunk == 1


def test_check_at_the_pin_is_clean(fake_fork: FakeFork) -> None:
    commit, trials = make_upstream().check(None)
    assert commit == fake_fork.pin
    assert {t.outcome for t in trials} == {"clean"}


def test_check_unknown_ref_is_a_clear_error(fake_fork: FakeFork) -> None:
    with pytest.raises(UpstreamError, match="not a ref or commit"):
        make_upstream().check("no-such-branch")


def test_diff_shows_the_series(fake_fork: FakeFork) -> None:
    text = make_upstream().diff()
    assert "+        (87, 87) => true," in text
    assert "pytei/extra/src/lib.rs" in text
    only = make_upstream().diff(patches_only=True)
    assert "pytei/extra" not in only and "flag();" in only


def test_mirror_spelling_with_and_without_git_suffix(fake_fork: FakeFork, monkeypatch: pytest.MonkeyPatch) -> None:
    # fork.toml spells the URL with .git; the mirror key is given with .git too this time.
    monkeypatch.setenv("PYTEI_GIT_MIRRORS", f"{UPSTREAM_URL}.git={fake_fork.upstream}")
    upstream = make_upstream()
    assert upstream.fetch() == str(fake_fork.upstream.resolve())
    # Plain git, given only the environment, resolves both spellings to the mirror.
    env = upstream.git.env
    for url in (UPSTREAM_URL, UPSTREAM_URL + ".git"):
        out = subprocess.run(["git", "ls-remote", url, "refs/tags/v1.0.0"], env=env, capture_output=True, text=True, check=False)
        assert out.returncode == 0 and fake_fork.pin in out.stdout


def test_missing_mirror_is_a_mirror_error(fake_fork: FakeFork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEI_GIT_MIRRORS", f"{UPSTREAM_URL}={tmp_path / 'nowhere'}")
    with pytest.raises(MirrorError, match="does not exist"):
        make_upstream()
    result = pytei("fork", "fetch")
    assert result.returncode == MirrorError.exit_code
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_mirror_and_no_network_is_an_upstream_error(fake_fork: FakeFork, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEI_GIT_MIRRORS")
    with pytest.raises(UpstreamError, match="could not fetch") as info:
        make_upstream().fetch()
    assert info.value.hint and "PYTEI_GIT_MIRRORS" in info.value.hint


def test_corrupt_upstream_cache_is_reported_and_refresh_repairs_it(fake_fork: FakeFork) -> None:
    upstream = make_upstream()
    upstream.fetch()
    for child in upstream.repo_dir.iterdir():
        if child.is_dir():
            for sub in child.rglob("*"):
                if sub.is_file():
                    sub.unlink()
    (upstream.repo_dir / "HEAD").write_text("garbage\n")
    with pytest.raises(CacheError, match="corrupt"):
        make_upstream().fetch()
    result = pytei("fork", "status")
    assert result.returncode in (CacheError.exit_code, 0)
    fetched = pytei("fork", "fetch")
    assert fetched.returncode == CacheError.exit_code, fetched.stderr
    assert "--refresh" in fetched.stderr
    assert pytei("fork", "fetch", "--refresh").returncode == 0
    assert make_upstream().git.has_commit(fake_fork.pin)


def test_broken_series_is_a_fork_definition_error(fake_fork: FakeFork) -> None:
    (fake_fork.patches / "series").write_text("0001-sm87.patch\nmissing.patch\n")
    result = pytei("fork", "status")
    assert result.returncode == ForkDefinitionError.exit_code
    assert "missing.patch" in result.stderr


def test_cli_status_json_and_apply(fake_fork: FakeFork) -> None:
    import json

    applied = pytei("fork", "apply")
    assert applied.returncode == 0, applied.stderr
    status = json.loads(pytei("fork", "status", "--json").stdout)
    assert status["up_to_date"] is True
    assert [p["state"] for p in status["patches"]] == ["applied"] * 4
    check = pytei("fork", "check", "--ref", "main", "--json")
    assert check.returncode == PatchError.exit_code
    assert json.loads(check.stdout)["patches"][3]["outcome"] == "fails"
    assert "0004-conflict.patch" in check.stderr
