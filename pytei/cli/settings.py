"""``pytei config show`` and ``pytei doctor``."""

from __future__ import annotations

import os

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pytei.build.doctor import pinned_rust_of_fetched_fork, run_checks
from pytei.build.hardware import detect_machine
from pytei.build.options import BuildOptions
from pytei.cache import Cache
from pytei.cli._app import AppContext, emit_json, pass_app
from pytei.config import env_name

__all__ = ["COMMANDS"]

_STYLE = {"ok": "green", "missing": "red", "warn": "yellow", "info": "cyan"}


@click.group("config")
def config_group() -> None:
    """Inspect pytei's settings."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def show(app: AppContext, as_json: bool) -> None:
    """Each setting's resolved value and where it came from (flag, env, file, default)."""
    settings = app.settings()
    rows = [
        {"key": s.key, "value": s.value, "source": s.source, "env": env_name(s.key)}
        for s in sorted(settings.values.values(), key=lambda s: (s.key.count("."), s.key))
    ]
    if as_json:
        emit_json(
            {
                "config_file": str(settings.config_file) if settings.config_file else None,
                "settings": rows,
                "services": [dict(s) for s in settings.services],
            }
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("setting", "value", "source", "environment variable"):
        table.add_column(column, overflow="fold")
    for row in rows:
        source = str(row["source"])
        style = "dim" if source == "default" else "bold"
        table.add_row(
            str(row["key"]), f"[{style}]{escape(repr(row['value']))}[/]", escape(source), str(row["env"])
        )
    out = Console(highlight=False)
    out.print(table)
    out.print(
        f"config file: {settings.config_file or '(none: ./pytei.yaml or [tool.pytei] in ./pyproject.toml)'}",
        markup=False,
    )
    if settings.services:
        out.print(f"services: {', '.join(str(s.get('name', i)) for i, s in enumerate(settings.services))}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def doctor(app: AppContext, as_json: bool) -> None:
    """What builds need on this machine, and what is missing (tools, libraries, disk, memory)."""
    settings = app.settings()
    options = BuildOptions.from_settings(settings)
    cache = Cache.from_settings(settings)
    checks = run_checks(
        options,
        cache,
        detect_machine(),
        os.environ,
        pinned_rust_of_fetched_fork(options, cache),
        profile=settings.get_str("build.profile"),
    )
    if as_json:
        emit_json({"checks": [c.to_json() for c in checks], "ok": all(c.status != "missing" for c in checks)})
        return
    table = Table(box=None, pad_edge=False)
    for column in ("check", "status", "detail", "needed for"):
        table.add_column(column, overflow="fold")
    for check in checks:
        detail = check.detail + (f" [dim](fix: {check.fix})[/]" if check.fix else "")
        table.add_row(check.name, f"[{_STYLE[check.status]}]{check.status}[/]", detail, check.needed_for)
    Console(highlight=False).print(table)


COMMANDS: list[click.Command] = [config_group, doctor]
