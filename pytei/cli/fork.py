"""``pytei fork``: the pinned upstream checkout and the patch series."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pytei.cache import Cache
from pytei.cli._app import AppContext, emit_json, pass_app
from pytei.errors import PatchError
from pytei.fork.upstream import ForkOptions, ForkStatus, Upstream

__all__ = ["COMMANDS"]

_STATE_STYLE = {
    "applied": "green",
    "clean": "green",
    "offset": "green",
    "pending": "yellow",
    "fuzz": "yellow",
    "3way": "yellow",
    "3way-merged": "yellow",
    "upstream": "cyan",
    "conflict": "red",
    "stale": "yellow",
    "failing": "red",
    "fails": "red",
}


def _upstream(app: AppContext) -> Upstream:
    settings = app.settings()
    return Upstream(ForkOptions.from_settings(settings), Cache.from_settings(settings))


@click.group()
def fork() -> None:
    """The pinned upstream TEI checkout and pytei's patch series."""


@fork.command("fetch")
@click.option("--refresh", is_flag=True, help="Drop the cached upstream repository and fetch it again.")
@pass_app
def fetch_cmd(app: AppContext, refresh: bool) -> None:
    """Get the pinned upstream commit into the cache (through git mirrors) and verify it."""
    upstream = _upstream(app)
    source = upstream.fetch(refresh=refresh)
    app.err.print(f"[green]✓[/] {upstream.fork.tag} ({upstream.fork.commit[:12]}) from {source}")
    click.echo(upstream.repo_dir)


@fork.command("apply")
@click.option("--discard-edits", is_flag=True, help="Throw away worktree edits that are not in the series.")
@pass_app
def apply_cmd(app: AppContext, discard_edits: bool) -> None:
    """Make the patched worktree: crates and every patch of the series, all or nothing."""
    upstream = _upstream(app)
    head = upstream.apply(discard_edits=discard_edits)
    for patch in upstream.fork.patches:
        app.err.print(f"[green]✓[/] {patch.name}")
    app.err.print(f"patched worktree at {head[:12]}")
    click.echo(upstream.worktree)


@fork.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status_cmd(app: AppContext, as_json: bool) -> None:
    """Upstream commit, each patch applied / pending / failing, and edits outside the series."""
    status = _upstream(app).status()
    if as_json:
        emit_json(status.to_json())
        return
    _print_status(status)


def _print_status(status: ForkStatus) -> None:
    out = Console(highlight=False)
    out.print(f"upstream  {status.upstream_url} {status.tag} {status.commit[:12]}")
    if status.fetched_from != status.upstream_url:
        out.print(f"mirror    {status.fetched_from}")
    out.print(f"fetched   {'yes' if status.fetched else 'no (run `pytei fork fetch`)'}")
    where = (
        f" ({status.worktree_kind})" if status.worktree and status.worktree_kind != "fork worktree" else ""
    )
    out.print(f"worktree  {status.worktree or 'none (run `pytei fork apply`)'}{where}")
    if status.head:
        verdict = "up to date" if status.up_to_date else "differs from the series (run `pytei fork apply`)"
        out.print(f"head      {status.head[:12]} — {verdict}")
    table = Table(box=None, pad_edge=False, show_header=True)
    table.add_column("patch")
    table.add_column("state")
    table.add_column("sha256")
    table.add_column("detail", overflow="fold")
    for name, state in status.crates.items():
        table.add_row(f"crate {name}", f"[{_STATE_STYLE.get(state, '')}]{state}[/]", "", "")
    for patch in status.patches:
        style = _STATE_STYLE.get(patch.state, "")
        table.add_row(patch.name, f"[{style}]{patch.state}[/]", patch.sha256[:12], patch.detail)
    out.print(table)
    if status.edits:
        out.print(f"[yellow]edits not in the series:[/] {', '.join(status.edits)}")


@fork.command("check")
@click.option(
    "--ref", default=None, help="Upstream ref to try the series on (tag, branch, sha, pull/N/head)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--strict", is_flag=True, help="Fail also when a patch needs fuzz or a 3-way merge.")
@click.option(
    "--refresh-into",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the series there rewritten to apply exactly on --ref (patches that need fuzz or a "
    "3-way merge get the diff they made, for review; patches the ref already has are left out).",
)
@pass_app
def check_cmd(
    app: AppContext, ref: str | None, as_json: bool, strict: bool, refresh_into: Path | None
) -> None:
    """Try the series on another upstream ref: clean, with offset/fuzz, 3-way, or not at all."""
    upstream = _upstream(app)
    commit, trials, refreshed = upstream.check_and_refresh(ref, refresh_into)
    if as_json:
        report: dict[str, object] = {
            "ref": ref or upstream.fork.tag,
            "commit": commit,
            "patches": [t.to_json() for t in trials],
        }
        if refreshed is not None:
            report["refreshed"] = {
                "directory": str(refreshed.directory),
                "series": list(refreshed.series),
                "rewritten": list(refreshed.rewritten),
                "dropped": list(refreshed.dropped),
            }
        emit_json(report)
    else:
        out = Console(highlight=False)
        out.print(f"series on {ref or upstream.fork.tag} ({commit[:12]}):")
        for trial in trials:
            style = _STATE_STYLE.get(trial.outcome, "")
            summary = trial.detail if trial.outcome == "upstream" else ""
            out.print(f"  {trial.patch}: [{style}]{trial.outcome}[/]" + (f" — {summary}" if summary else ""))
            for file in trial.files:
                if file.outcome in ("applied", "upstream") and trial.outcome != "fails":
                    continue
                out.print(f"      [{_STATE_STYLE.get(file.outcome, '')}]{escape(file.describe())}[/]")
        if refreshed is not None:
            out.print(
                f"refreshed series in {refreshed.directory}: {len(refreshed.series)} patches"
                + (f", rewritten: {', '.join(refreshed.rewritten)}" if refreshed.rewritten else "")
                + (
                    f", left out (already upstream): {', '.join(refreshed.dropped)}"
                    if refreshed.dropped
                    else ""
                )
            )
    failed = [t for t in trials if not t.applied]
    lenient = [t for t in trials if t.outcome in ("fuzz", "3way") and refreshed is None]
    if failed:
        first = failed[0]
        raise PatchError(
            f"{len(failed)} of {len(trials)} patches do not apply on {ref or upstream.fork.tag}: "
            + ", ".join(
                f"{t.patch} ({', '.join(f.file for f in t.files if f.outcome in ('conflict', 'fails')) or t.file})"
                for t in failed
            ),
            patch=first.patch,
            file=first.file,
            hunk=first.hunk,
            hint="refresh those patches against that ref",
        )
    if strict and lenient:
        raise PatchError(
            f"{len(lenient)} patches need fuzz or a 3-way merge: " + ", ".join(t.patch for t in lenient),
            hint="refresh them so they apply exactly",
        )


@fork.command("diff")
@click.option("--stat", is_flag=True, help="Only a summary of the files changed.")
@click.option("--patches-only", is_flag=True, help="Leave out the crates pytei adds to the tree.")
@pass_app
def diff_cmd(app: AppContext, stat: bool, patches_only: bool) -> None:
    """What the series changes in upstream, as one diff (for review)."""
    click.echo(_upstream(app).diff(stat=stat, patches_only=patches_only))


COMMANDS: list[click.Command] = [fork]
