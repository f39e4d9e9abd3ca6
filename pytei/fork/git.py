"""A thin, typed layer over the git command line, always with the mirror rules applied."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytei._subprocess import Result, run
from pytei.fork.mirrors import Mirrors

__all__ = ["FIXED_IDENTITY", "Git", "git_environment"]

# Commits pytei makes (crates, patches) get a fixed author and date, so the same base and
# the same series always give the same commit ids: a manifest's fork commit is reproducible.
FIXED_IDENTITY = {
    "GIT_AUTHOR_NAME": "pytei",
    "GIT_AUTHOR_EMAIL": "pytei@localhost",
    "GIT_COMMITTER_NAME": "pytei",
    "GIT_COMMITTER_EMAIL": "pytei@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}


def git_environment(mirrors: Mirrors, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = mirrors.git_env(os.environ if base is None else base)
    env.update(FIXED_IDENTITY)
    # Never wait for a password prompt, and keep git's messages parseable.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    return env


class Git:
    """Runs git against one repository (``git_dir``), optionally with a work tree."""

    def __init__(self, git_dir: Path, env: Mapping[str, str], work_tree: Path | None = None) -> None:
        self.git_dir = git_dir
        self.work_tree = work_tree
        self.env = dict(env)

    def with_work_tree(self, work_tree: Path) -> Git:
        return Git(self.git_dir, self.env, work_tree)

    def run(
        self,
        *args: str | Path,
        check: bool = True,
        index_file: Path | None = None,
        input_text: str | None = None,
        message: str | None = None,
        hint: str | None = None,
    ) -> Result:
        env = dict(self.env)
        if index_file is not None:
            env["GIT_INDEX_FILE"] = str(index_file)
        # In a linked work tree, git must find the tree's own .git file: HEAD and the index
        # belong to the work tree, not to the repository it was added from.
        cmd: list[str | Path] = ["git", f"--git-dir={self.git_dir}"] if self.work_tree is None else ["git"]
        cwd = self.work_tree
        return run(
            [*cmd, *args],
            cwd=cwd,
            env=env,
            check=check,
            input_text=input_text,
            stream=False,
            message=message,
            hint=hint,
        )

    def out(self, *args: str | Path, index_file: Path | None = None, input_text: str | None = None) -> str:
        return self.run(*args, index_file=index_file, input_text=input_text).stdout.strip()

    def ok(self, *args: str | Path, index_file: Path | None = None) -> bool:
        return self.run(*args, check=False, index_file=index_file).returncode == 0

    def has_commit(self, commit: str) -> bool:
        return self.ok("cat-file", "-e", f"{commit}^{{commit}}")

    def missing_objects(self, commit: str, limit: int = 5) -> list[str]:
        """Objects the tree of ``commit`` needs that the repository lacks (an incomplete mirror)."""
        result = self.run("rev-list", "--objects", "--missing=print", "--no-walk", commit, check=False)
        missing = [line[1:] for line in result.stdout.splitlines() if line.startswith("?")]
        if result.returncode != 0 and not missing:
            missing = ["(unreadable)"]
        return missing[:limit]

    def commit_tree(self, tree: str, parent: str, message: str) -> str:
        return self.out("commit-tree", tree, "-p", parent, "-F", "-", input_text=message)

    def fetch(self, url: str, refspecs: Sequence[str]) -> Result:
        return self.run("fetch", "--no-tags", "--quiet", url, *refspecs, check=False)
