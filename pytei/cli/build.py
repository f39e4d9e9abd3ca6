"""``pytei build`` and ``pytei which``."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from pytei.build.cargo import CargoProgress
from pytei.build.cuda import flash_selection_for_models
from pytei.build.execute import execute_plan
from pytei.build.hardware import detect_machine
from pytei.build.installs import find_router, installed_routers
from pytei.build.manifest import Transport
from pytei.build.options import BuildOptions, BuildRequest
from pytei.build.plan import BuildPlan, choose_profile, make_plan
from pytei.build.profiles import load_profiles, profile_applicability, select_profile
from pytei.cache import Cache
from pytei.cli._app import AppContext, emit_json, pass_app
from pytei.config import Value
from pytei.errors import CacheError, ConfigError

__all__ = ["COMMANDS"]


def _list_profiles(app: AppContext, as_json: bool) -> None:
    machine = detect_machine()
    profiles = load_profiles()
    try:
        selection = select_profile(machine, profiles)
        chosen, reason = selection.profile.name, selection.reason
    except Exception as exc:  # noqa: BLE001 (listing must work even when detection cannot decide)
        chosen, reason = "", str(exc)
    rows = []
    for profile in profiles.values():
        applies, why = profile_applicability(profile, machine)
        rows.append(
            {
                "name": profile.name,
                "description": profile.description,
                "features": list(profile.features),
                "compute_cap": profile.compute_cap or None,
                "patches": list(profile.patches),
                "fits_this_machine": applies,
                "why": why,
                "selected": profile.name == chosen,
            }
        )
    if as_json:
        emit_json({"machine": machine.cpu_summary(), "selected": chosen, "reason": reason, "profiles": rows})
        return
    # Narrow terminals: name, cap and fit on one line each, the description and the features
    # wrap in the last column (the machine is described once, below, not in every row).
    table = Table(box=None, pad_edge=False, show_lines=False)
    table.add_column("")
    table.add_column("profile", no_wrap=True)
    table.add_column("cap", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    table.add_column("description / features", overflow="fold", ratio=1)
    summary = machine.cpu_summary()
    for row in rows:
        why = str(row["why"])
        if row["fits_this_machine"]:
            fits = "[green]yes[/]" + ("" if why == summary else " [yellow]*[/]")
        else:
            fits = "[dim]no[/]"
        note = "" if why == summary else f" [dim]({escape(why)})[/]"
        table.add_row(
            "→" if row["selected"] else "",
            str(row["name"]),
            str(row["compute_cap"] or ""),
            fits,
            f"{escape(str(row['description']))}{note}\n[dim]{escape(', '.join(row['features']))}[/]",  # type: ignore[arg-type]
        )
    out = Console(highlight=False)
    out.print(table)
    out.print(
        f"\nthis machine: {machine.cpu_summary()}; GPUs: "
        + (", ".join(f"{g.name} (sm_{g.compute_cap})" for g in machine.gpus) or "none")
    )
    out.print(f"`pytei build` would use: {chosen or '(none)'} — {reason}")


def _print_plan(plan: BuildPlan, err: Console) -> None:
    err.print(f"profile   {plan.profile.name} ({plan.reason})")
    err.print(f"features  {','.join(plan.features)}  mode {plan.mode}  jobs {plan.jobs} ({plan.jobs_reason})")
    err.print(
        f"upstream  {plan.upstream['tag']} {plan.upstream['commit'][:12]} + {len(plan.patches)} patches "
        f"→ {plan.fork_commit[:12]}"
    )
    err.print(f"rust      {plan.toolchain['note']}")
    for source in plan.sources:
        err.print(
            f"source    {source.url} {source.rev[:12]}: {source.kind}"
            + (f" — {source.note}" if source.note else "")
        )
    for name, tool in plan.tools.items():
        if name in ("nvcc", "cudarc", "protoc"):
            err.print(f"{name:<9} {escape(tool)}")
    for item in plan.needed:
        err.print(f"[cyan]needed[/]    {escape(item)}")
    for warning in plan.warnings:
        err.print(f"[yellow]note[/]      {escape(warning)}")


def _flash_for_models(
    app: AppContext, models: tuple[str, ...], dtypes: str | None
) -> dict[str, Value | None]:
    """--flash-attn-for: the head dims and causality the models need, as settings flags."""
    if not models:
        return {}
    from pytei.models.resolve import resolve_model  # noqa: PLC0415 (only for --flash-attn-for)

    cache = Cache.from_settings(app.settings())
    dirs = [
        resolve_model(model, cache, env=os.environ, progress=app.err.is_terminal).path for model in models
    ]
    chosen = flash_selection_for_models(dirs, tuple((dtypes or "fp16").split(",")))
    return {
        "build.flash_attn_head_dims": [str(d) for d in chosen.head_dims],
        "build.flash_attn_causal": chosen.causal,
    }


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class _ProgressView:
    """A live bar on a terminal; a line every 30 s elsewhere (CI logs).  The clock is cargo's
    own elapsed time, so it goes on through the final link, which emits no message."""

    def __init__(self, err: Console, total: int, exact: bool) -> None:
        self.err = err
        self.tty = err.is_terminal
        self.last = 0.0
        self.prefix = "" if exact else "~"
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            TextColumn("{task.completed}/" + self.prefix + "{task.total} units"),
            TextColumn("{task.fields[clock]}"),
            TextColumn("{task.fields[current]}"),
            console=err,
            transient=True,
        )
        self.task = self.progress.add_task("build", total=total, current="", phase="compiling", clock="0:00")

    def __enter__(self) -> _ProgressView:
        if self.tty:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tty:
            self.progress.stop()

    def update(self, state: CargoProgress) -> None:
        current = state.current if state.phase == "compiling" else ""
        if self.tty:
            self.progress.update(
                self.task, completed=state.done, total=state.total, current=current,
                phase=state.phase, clock=_clock(state.elapsed),
            )  # fmt: skip
            return
        now = time.monotonic()
        if now - self.last >= 30:
            self.last = now
            self.err.print(
                f"{state.phase}: {state.done}/{self.prefix}{state.total} units, {_clock(state.elapsed)}"
                + (f", {current}" if current else ""),
                markup=False,
            )


@click.command()
@click.option("--profile", default=None, help="Build profile (see --list-profiles); default: detected.")
@click.option("--features", default=None, help="Raw cargo features, comma-separated (like upstream's -F).")
@click.option("--compute-cap", type=int, default=None, help="CUDA compute capability, e.g. 87 or 90.")
@click.option("--http", "transport", flag_value="http", default=None, help="Build the HTTP router (default).")
@click.option("--grpc", "transport", flag_value="grpc", help="Build the gRPC router instead of HTTP.")
@click.option(
    "--fast",
    is_flag=True,
    help="A quicker build with the same features: no link-time optimisation, and most crates at "
    "opt-level 0 (only the inference path fully optimised); installed beside the release router.",
)
@click.option(
    "--native", is_flag=True, help="Optimise for this CPU only (-C target-cpu=native); not portable."
)
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), default=None, help="Parallel jobs (default: by memory)."
)
@click.option(
    "--flash-attn-head-dims",
    default=None,
    help="CUDA: compile only these flash-attention head dims (e.g. 32,64); a model needing another is "
    "refused when the router starts.  [default: all eight]",
)
@click.option(
    "--flash-attn-for",
    "flash_for",
    multiple=True,
    help="CUDA: compile the flash-attention kernels these models need (directory, catalogue name or hub "
    "id; repeatable): head dims from config.json, causal for decoders; fp16 unless --flash-attn-dtypes.",
)
@click.option("--flash-attn-dtypes", default=None, help="CUDA: fp16 and/or bf16 flash-attention kernels.")
@click.option(
    "--engine",
    is_flag=True,
    help="Build TEI's engine as a Python extension (pytei_native, for pytei.LocalEngine) instead of the "
    "router, with the same profile and features, and install it into this Python.",
)
@click.option(
    "--wheel-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --engine: copy the wheel here and do not install it.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (profile, cargo argv, env, patches); build nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list-profiles", is_flag=True, help="List profiles and which one this machine would get.")
@pass_app
def build(
    app: AppContext,
    profile: str | None,
    features: str | None,
    compute_cap: int | None,
    transport: str | None,
    fast: bool,
    native: bool,
    jobs: int | None,
    flash_attn_head_dims: str | None,
    flash_for: tuple[str, ...],
    flash_attn_dtypes: str | None,
    engine: bool,
    wheel_dir: Path | None,
    dry_run: bool,
    as_json: bool,
    list_profiles: bool,
) -> None:
    """Build TEI's router for this machine (or the named profile) from the patched fork."""
    if list_profiles:
        _list_profiles(app, as_json)
        return
    settings = app.settings(
        {
            "build.profile": profile,
            "build.features": features,
            "build.compute_cap": compute_cap,
            "build.jobs": jobs,
            "build.mode": "fast" if fast else None,
            "build.native": True if native else None,
            "build.flash_attn_head_dims": flash_attn_head_dims,
            "build.flash_attn_dtypes": flash_attn_dtypes,
            **_flash_for_models(app, flash_for, flash_attn_dtypes),
        }
    )
    chosen: Transport | None = "grpc" if transport == "grpc" else "http" if transport == "http" else None
    if wheel_dir is not None and not engine:
        raise ConfigError("--wheel-dir is for --engine builds", hint="add --engine, or drop --wheel-dir")
    request = dataclasses.replace(BuildRequest.from_settings(settings, transport=chosen), engine=engine)
    options = BuildOptions.from_settings(settings)
    cache = Cache.from_settings(settings)
    machine = detect_machine()
    profile_name = choose_profile(request, machine)[0].name
    lock_name = f"build-{profile_name}"

    def waiting(message: str) -> None:
        app.err.print(f"pytei: {message}; it goes on when that build ends", markup=False, highlight=False)

    if dry_run:
        # A dry run never waits for a build, and never rewrites the tree one is compiling.
        try:
            with cache.lock(lock_name, timeout=0):
                plan = make_plan(options, cache, request, machine, planning=True)
        except CacheError as busy:
            app.err.print(f"pytei: {busy.message}; planning from its tree as it is", markup=False)
            plan = make_plan(options, cache, request, machine, prepare_tree=False, planning=True)
        if as_json:
            emit_json(plan.to_json())
        else:
            _print_plan(plan, Console(highlight=False))
            click.echo(" ".join(plan.cargo_argv))
        return
    what = (
        f"pytei build --profile {profile_name}"
        + (" --engine" if engine else "")
        + (" --fast" if request.mode == "fast" else "")
    )
    with cache.lock(lock_name, on_wait=waiting, what=what):
        plan = make_plan(options, cache, request, machine)
        _print_plan(plan, app.err)
        with _ProgressView(app.err, plan.units, plan.units_exact) as view:
            result = execute_plan(plan, cache, machine, on_progress=view.update, lock=False)
    if result.units_built == 0:
        app.err.print(f"[green]✓[/] {plan.install_name} is up to date (built {result.router.built_at})")
    else:
        app.err.print(
            f"[green]✓[/] built {plan.install_name} in {result.wall_seconds / 60:.1f} min, "
            f"peak memory {result.peak_rss_bytes / 2**30:.1f} GiB ({result.units_built} crates compiled)"
        )
    artifact = result.router.binary
    if engine:
        artifact = _deliver_engine(app, artifact, wheel_dir)
    if as_json:
        emit_json({"binary": str(artifact), "manifest": result.router.manifest.to_json()})
    else:
        click.echo(artifact)


def _deliver_engine(app: AppContext, wheel: Path, wheel_dir: Path | None) -> Path:
    """Copy the engine's wheel to ``wheel_dir``, or install it into this Python."""
    from pytei.build.engine import install_wheel  # noqa: PLC0415 (only for --engine)

    if wheel_dir is not None:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        target = wheel_dir / wheel.name
        shutil.copyfile(wheel, target)
        return target
    install_wheel(wheel)
    app.err.print(f"[green]✓[/] installed {wheel.name} into {sys.executable}")
    return wheel


@click.command()
@click.option("--profile", default=None, help="Profile to look up (default: the most recently built).")
@click.option("--manifest", "show_manifest", is_flag=True, help="Print the build manifest (JSON).")
@click.option("--all", "show_all", is_flag=True, help="List every installed router.")
@pass_app
def which(app: AppContext, profile: str | None, show_manifest: bool, show_all: bool) -> None:
    """Where the router built by `pytei build` is (and how it was built)."""
    cache = Cache.from_settings(app.settings())
    if show_all:
        for router in installed_routers(cache):
            click.echo(f"{router.profile}\t{router.built_at}\t{router.binary}")
        return
    router = find_router(cache, profile)
    if show_manifest:
        emit_json(router.manifest.to_json())
    else:
        click.echo(router.binary)


COMMANDS: list[click.Command] = [build, which]
