"""The upstream checkout and the patched worktree (``pytei fork ...``).

Cache layout:
- ``upstream/<name>.git``: a bare repository holding the pinned commit (and refs checked
  against), filled from the upstream URL through the git mirrors;
- ``fork/worktree``: a work tree of that repository at the patched commit;
- ``tmp/``: scratch work trees for ``fork check``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pytei.cache import Cache
from pytei.config import Settings
from pytei.errors import CacheError, PatchError, UpstreamError
from pytei.fork.definition import ForkDefinition, fork_root, load_fork
from pytei.fork.git import Git, git_environment
from pytei.fork.mirrors import Mirrors, normalize_url
from pytei.fork.patching import (
    TRAILER_CRATE,
    TRAILER_PATCH,
    TRAILER_SHA,
    build_series_commit,
    check_applies,
    commit_crates,
)
from pytei.fork.refresh import Refreshed, write_refreshed_series
from pytei.fork.trial import PatchTrial, trial_apply

__all__ = ["ForkOptions", "ForkStatus", "PatchState", "Upstream"]

PIN_REF = "refs/pytei/pin"
_ABBREVIATED_SHA = re.compile(r"[0-9a-fA-F]{4,39}")


@dataclass(frozen=True)
class PatchState:
    name: str
    sha256: str
    state: str  # "applied", "stale" (series file changed since), "pending", "failing"
    detail: str = ""


@dataclass(frozen=True)
class ForkStatus:
    upstream_url: str
    fetched_from: str
    tag: str
    commit: str
    fetched: bool
    worktree: str | None
    head: str | None
    series_commit: str | None  # what `fork apply` would produce now (None if it cannot)
    up_to_date: bool
    patches: list[PatchState] = field(default_factory=list)
    crates: dict[str, str] = field(default_factory=dict)  # name -> "applied" / "stale" / "pending"
    edits: list[str] = field(default_factory=list)  # worktree changes not in the series
    worktree_kind: str = ""  # "fork worktree", or the last build's tree

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ForkOptions:
    """What the fork stage reads from the settings, read once: the fork definition's directory
    (empty: the one shipped with pytei) and the git mirrors (checked when parsed)."""

    fork_dir: str
    mirrors: Mirrors

    @classmethod
    def from_settings(cls, settings: Settings) -> ForkOptions:
        return cls(settings.get_str("fork_dir"), Mirrors.parse(settings.get_map("git_mirrors")))


class Upstream:
    """The pinned upstream repository in pytei's cache, and the fork built from it."""

    def __init__(self, options: ForkOptions, cache: Cache, fork: ForkDefinition | None = None) -> None:
        self.options = options
        self.cache = cache
        self.fork = fork if fork is not None else load_fork(fork_root(options.fork_dir))
        self.mirrors = options.mirrors
        slug = normalize_url(self.fork.upstream_url).rsplit("/", 1)[-1]
        self.repo_dir = cache.root / "upstream" / f"{slug}.git"
        self.worktree = cache.root / "fork" / "worktree"
        self.git = Git(self.repo_dir, git_environment(self.mirrors))

    # --- fetch -----------------------------------------------------------------------------

    def _check_repo(self) -> None:
        if not self.repo_dir.exists():
            return
        if not self.git.ok("rev-parse", "--git-dir"):
            raise CacheError(
                f"the upstream cache {self.repo_dir} is corrupt (not a git repository)",
                hint="run `pytei fork fetch --refresh` to fetch it again",
            )

    def fetch(self, *, refresh: bool = False) -> str:
        """Make sure the pinned commit is in the cache, complete; returns where it came from."""
        with self.cache.lock("upstream"):
            if refresh and self.repo_dir.exists():
                self._drop_worktree_registration()
                shutil.rmtree(self.repo_dir)
            self._check_repo()
            if not self.repo_dir.exists():
                self._init_repo()
            source = self.mirrors.resolve(self.fork.upstream_url)
            if not self.git.has_commit(self.fork.commit):
                self._fetch_pin(source)
            missing = self.git.missing_objects(self.fork.commit)
            if missing:
                raise UpstreamError(
                    f"the upstream commit {self.fork.commit[:12]} is incomplete in {source}: "
                    f"objects {', '.join(missing)} are missing",
                    hint="the mirror must hold the whole tree of the pinned commit; refresh the mirror",
                )
            self.git.run("update-ref", PIN_REF, self.fork.commit)
            return source

    def _init_repo(self) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=".upstream-", dir=self.cache.area("upstream")))
        try:
            Git(scratch, self.git.env).run("init", "--bare", "--quiet", str(scratch))
            scratch.rename(self.repo_dir)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def _fetch_pin(self, source: str) -> None:
        url = self.fork.upstream_url
        by_commit = self.git.fetch(url, [self.fork.commit])
        if self.git.has_commit(self.fork.commit):
            return
        tag_ref = f"refs/tags/{self.fork.tag}"
        by_tag = self.git.fetch(url, [f"+{tag_ref}:{tag_ref}"])
        if by_tag.returncode == 0:
            tagged = self.git.out("rev-parse", f"{tag_ref}^{{commit}}")
            if tagged != self.fork.commit:
                raise UpstreamError(
                    f"tag {self.fork.tag} at {source} points at {tagged[:12]}, "
                    f"but fork.toml pins {self.fork.commit[:12]}",
                    hint="the tag moved upstream; check the mirror or update the pin deliberately",
                )
        if not self.git.has_commit(self.fork.commit):
            reason = (by_tag.stderr or by_commit.stderr).strip().splitlines()
            mirrored = self.mirrors.has(url)
            raise UpstreamError(
                f"could not fetch {self.fork.commit[:12]} ({self.fork.tag}) from {source}"
                + (f": {reason[-1]}" if reason else ""),
                hint=(
                    "check that the mirror holds that commit"
                    if mirrored
                    else f"add a mirror: PYTEI_GIT_MIRRORS='{url}=/path/to/clone'"
                ),
            )

    def fetch_ref(self, ref: str) -> str:
        """Fetch another upstream ref (tag, branch, sha, pull/N/head) and return its commit."""
        self.fetch()
        with self.cache.lock("upstream"):
            if self.git.ok("cat-file", "-e", f"{ref}^{{commit}}"):
                return self.git.out("rev-parse", f"{ref}^{{commit}}")
            candidates = [ref]
            if not ref.startswith("refs/"):
                candidates += [f"refs/tags/{ref}", f"refs/heads/{ref}", f"refs/{ref}"]
            for candidate in candidates:
                if self.git.fetch(self.fork.upstream_url, [candidate]).returncode == 0:
                    commit = self.git.out("rev-parse", "FETCH_HEAD^{commit}")
                    self.git.run("update-ref", f"refs/pytei/check/{commit}", commit)
                    return commit
            if _ABBREVIATED_SHA.fullmatch(ref):
                # A server gives no commit by an abbreviated name: take its branches and tags,
                # then resolve the name locally, as git would.
                self.git.fetch(
                    self.fork.upstream_url,
                    ["+refs/heads/*:refs/pytei/upstream/heads/*", "+refs/tags/*:refs/pytei/upstream/tags/*"],
                )
                found = self.git.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
                if found.returncode == 0:
                    commit = found.stdout.strip()
                    self.git.run("update-ref", f"refs/pytei/check/{commit}", commit)
                    return commit
        raise UpstreamError(
            f"{ref!r} is not a ref or commit of {self.mirrors.resolve(self.fork.upstream_url)}",
            hint="give a tag (v1.9.2), a branch (main), a commit sha, or pull/N/head",
        )

    # --- apply -----------------------------------------------------------------------------

    def series_commit(self, base: str | None = None) -> str:
        """The commit the series produces on ``base`` (default: the pin), without a work tree."""
        commit, _ = build_series_commit(self.git, self.fork, base or self.fork.commit)
        return commit

    def _worktree_git(self, tree: Path | None = None) -> Git:
        return self.git.with_work_tree(tree or self.worktree)

    def _worktree_valid(self, tree: Path | None = None) -> bool:
        tree = tree or self.worktree
        return (tree / ".git").is_file() and self._worktree_git(tree).ok("rev-parse", "HEAD")

    def _status_tree(self) -> tuple[Path, str] | None:
        """The tree ``fork status`` describes: the fork worktree, else the last build's tree
        (``pytei build`` checks the patched commit out per profile, not into the worktree)."""
        if self._worktree_valid():
            return self.worktree, "fork worktree"
        builds = [tree for tree in (self.cache.root / "builds").glob("*/src") if (tree / ".git").is_file()]
        for tree in sorted(builds, key=lambda p: p.stat().st_mtime, reverse=True):
            if self._worktree_valid(tree):
                return tree, f"the tree of the last build (profile {tree.parent.name})"
        return None

    def _drop_worktree_registration(self) -> None:
        if self.repo_dir.exists():
            self.git.run("worktree", "prune", check=False)

    def worktree_edits(self, tree: Path | None = None) -> list[str]:
        tree = tree or self.worktree
        if not self._worktree_valid(tree):
            return []
        lines = (
            self._worktree_git(tree).run("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
        )
        edits = [line[3:] for line in lines if line.strip()]
        if tree != self.worktree:
            # cargo rewrites the lock file of a build tree on every build (pytei's path patches)
            edits = [edit for edit in edits if edit != "Cargo.lock"]
        return edits

    def apply(self, *, discard_edits: bool = False) -> str:
        """Bring the worktree to the patched commit; all or nothing."""
        self.fetch()
        with self.cache.lock("fork"):
            target = self.series_commit()
            if self.worktree.exists() and not self._worktree_valid():
                raise CacheError(
                    f"the fork worktree {self.worktree} is corrupt",
                    hint=f"remove {self.worktree} and run `pytei fork apply` again",
                )
            if not self.worktree.exists():
                self._drop_worktree_registration()
                self.worktree.parent.mkdir(parents=True, exist_ok=True)
                self.git.run("worktree", "add", "--detach", "--quiet", str(self.worktree), target)
                return target
            edits = self.worktree_edits()
            if edits and not discard_edits:
                raise PatchError(
                    f"the fork worktree has edits that are not in the series: {', '.join(edits[:5])}"
                    + (" ..." if len(edits) > 5 else ""),
                    hint="turn them into a patch in patches/, or run `pytei fork apply --discard-edits`",
                )
            wt = self._worktree_git()
            wt.run("checkout", "--detach", "--force", "--quiet", target)
            if discard_edits:
                wt.run("clean", "-fdq")
            return target

    # --- status ----------------------------------------------------------------------------

    def status(self) -> ForkStatus:
        fetched = self.repo_dir.exists() and self.git.has_commit(self.fork.commit)
        head = None
        described = self._status_tree()
        tree, tree_kind = described if described is not None else (None, "")
        if tree is not None:
            head = self._worktree_git(tree).out("rev-parse", "HEAD")
        series_commit: str | None = None
        if fetched:
            with contextlib.suppress(PatchError):
                series_commit = self.series_commit()
        applied: dict[str, str] = {}
        crates_applied: dict[str, str] = {}
        foreign: list[str] = []
        if head is not None and fetched:
            applied, crates_applied, foreign = self._read_chain(head)
        states: list[PatchState] = []
        pending: list[str] = []
        for patch in self.fork.patches:
            if applied.get(patch.name) == patch.sha256:
                states.append(PatchState(patch.name, patch.sha256, "applied"))
            elif patch.name in applied:
                states.append(PatchState(patch.name, patch.sha256, "stale", "changed since it was applied"))
            else:
                pending.append(patch.name)
                states.append(PatchState(patch.name, patch.sha256, "pending"))
        if pending and fetched:
            states = self._classify_pending(states, head)
        crates = {}
        for crate in self.fork.crates:
            recorded = crates_applied.get(crate.name)
            crates[crate.name] = (
                "pending"
                if recorded is None
                else "applied"
                if recorded == crate.content_sha256()
                else "stale"
            )
        edits = [f"commit {c}" for c in foreign] + (self.worktree_edits(tree) if tree is not None else [])
        return ForkStatus(
            upstream_url=self.fork.upstream_url,
            fetched_from=self.mirrors.resolve(self.fork.upstream_url),
            tag=self.fork.tag,
            commit=self.fork.commit,
            fetched=fetched,
            worktree=str(tree) if tree is not None else None,
            worktree_kind=tree_kind,
            head=head,
            series_commit=series_commit,
            up_to_date=head is not None and head == series_commit and not edits,
            patches=states,
            crates=crates,
            edits=edits,
        )

    def _read_chain(self, head: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """Patches and crates recorded by pytei's commits between the pin and ``head``."""
        if not self.git.ok("merge-base", "--is-ancestor", self.fork.commit, head):
            return {}, {}, [head[:12]]
        log = self.git.out("log", "--format=%H%x00%B%x01", f"{self.fork.commit}..{head}")
        patches: dict[str, str] = {}
        crates: dict[str, str] = {}
        foreign: list[str] = []
        for entry in filter(None, (e.strip() for e in log.split("\x01"))):
            commit, _, body = entry.partition("\x00")
            trailers = dict(
                line.split(": ", 1)
                for line in body.splitlines()
                if line.startswith(("Pytei-",)) and ": " in line
            )
            if TRAILER_PATCH in trailers:
                patches[trailers[TRAILER_PATCH]] = trailers.get(TRAILER_SHA, "")
            elif TRAILER_CRATE in trailers:
                name, _, digest = trailers[TRAILER_CRATE].partition(" ")
                crates[name] = digest
            else:
                foreign.append(commit[:12])
        return patches, crates, foreign

    def _classify_pending(self, states: list[PatchState], head: str | None) -> list[PatchState]:
        """Whether each pending patch would apply after the applied ones (in series order)."""
        base = head or commit_crates(self.git, self.fork, self.fork.commit)
        names = {s.name for s in states if s.state == "pending"}
        pending = [p for p in self.fork.patches if p.name in names]
        verdicts = check_applies(self.git, base, pending)
        return [
            PatchState(s.name, s.sha256, "failing", verdicts[s.name] or "") if verdicts.get(s.name) else s
            for s in states
        ]

    # --- check against another ref -------------------------------------------------------------

    @contextlib.contextmanager
    def _scratch_worktree(self, commit: str) -> Iterator[Path]:
        scratch = Path(tempfile.mkdtemp(prefix="check-", dir=self.cache.area("tmp")))
        path = scratch / "tree"
        self.git.run("worktree", "add", "--detach", "--quiet", str(path), commit)
        try:
            yield path
        finally:
            self.git.run("worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(scratch, ignore_errors=True)
            self.git.run("worktree", "prune", check=False)

    def check(self, ref: str | None = None) -> tuple[str, list[PatchTrial]]:
        """Try the series on ``ref`` (default: the pin); returns the ref's commit and a trial each."""
        commit, trials, _ = self.check_and_refresh(ref, None)
        return commit, trials

    def check_and_refresh(
        self, ref: str | None, refresh_into: Path | None
    ) -> tuple[str, list[PatchTrial], Refreshed | None]:
        """:meth:`check`, and with ``refresh_into`` the series rewritten there so that it applies
        exactly on ``ref`` (:mod:`pytei.fork.refresh`)."""
        if ref:
            commit = self.fetch_ref(ref)
        else:
            self.fetch()
            commit = self.fork.commit
        with self.cache.lock("upstream"):
            base = commit_crates(self.git, self.fork, commit)
            with self._scratch_worktree(base) as tree:
                wt = self._worktree_git(tree)
                trials: list[PatchTrial] = []
                spans: list[tuple[str, str] | None] = []
                for patch in self.fork.patches:
                    before = wt.out("rev-parse", "HEAD")
                    trials.append(trial_apply(self.git, tree, patch))
                    after = wt.out("rev-parse", "HEAD")
                    spans.append((before, after) if after != before else None)
                refreshed = None
                if refresh_into is not None and all(t.applied for t in trials):  # else: the caller's error
                    refreshed = write_refreshed_series(
                        self.git,
                        list(self.fork.patches),
                        trials,
                        spans,
                        ref=ref or self.fork.tag,
                        ref_commit=commit,
                        into=refresh_into,
                    )
                return commit, trials, refreshed

    # --- diff ------------------------------------------------------------------------------

    def diff(self, *, stat: bool = False, patches_only: bool = False) -> str:
        """What the series changes: the pin against the patched commit."""
        self.fetch()
        target = self.series_commit()
        base = self.fork.commit
        if patches_only:
            base = commit_crates(self.git, self.fork, self.fork.commit)
        args = ["diff", "--no-color", "--stat" if stat else "--patch", base, target]
        return self.git.out(*args)
