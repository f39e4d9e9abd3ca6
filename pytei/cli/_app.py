"""The click group, the shared context, and the error-to-exit-code wrapper."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from pytei._version import __version__
from pytei.config import Settings, Value, load_settings
from pytei.errors import PyteiError

__all__ = ["AppContext", "SettingOption", "cli", "emit_json", "main", "pass_app", "setting_option"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """What every command gets: settings, verbosity and the stderr console."""

    verbose: bool
    debug: bool
    config_file: Path | None
    err: Console
    _settings: Settings | None = None

    def settings(self, flags: dict[str, Value | None] | None = None) -> Settings:
        """Resolve settings once per invocation; ``flags`` are the command's own options."""
        if self._settings is None:
            self._settings = load_settings(env=os.environ, config_file=self.config_file)
        return self._settings.with_flags(flags or {})

    def use_config(self, config_file: Path | None) -> None:
        """A command's own ``-c FILE`` (``pytei serve -c``): the same as ``pytei -c FILE``."""
        if config_file is not None and config_file != self.config_file:
            self.config_file = config_file
            self._settings = None


pass_app = click.make_pass_decorator(AppContext)


def emit_json(data: object) -> None:
    """Machine-readable results go to stdout, one JSON document."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


# Command name -> module defining it.  Modules load only when their command runs (or for
# --help), so `pytei serve` does not pay for the benchmark's or the build's imports.
LAZY_COMMANDS = {
    "config": "settings",
    "doctor": "settings",
    "fork": "fork",
    "build": "build",
    "which": "build",
    "serve": "serve",
    "health": "serve",
    "stop": "serve",
    "ps": "serve",
    "bench": "bench",
    "export": "export",
    "image": "deploy",
    "deploy": "deploy",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        module = importlib.import_module(f"pytei.cli.{LAZY_COMMANDS[cmd_name]}")
        for candidate in module.COMMANDS:
            self.add_command(candidate)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="pytei")
@click.option("-v", "--verbose", is_flag=True, help="Echo commands and show their output.")
@click.option(
    "--debug", is_flag=True, envvar="PYTEI_DEBUG", help="Show tracebacks for errors (also PYTEI_DEBUG=1)."
)
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file to use instead of ./pytei.yaml or [tool.pytei] in ./pyproject.toml.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, debug: bool, config_file: Path | None) -> None:
    """Build, patch, serve, query and benchmark Hugging Face text-embeddings-inference."""
    no_color = bool(os.environ.get("NO_COLOR"))
    force = bool(os.environ.get("FORCE_COLOR")) or None
    err = Console(stderr=True, no_color=no_color, force_terminal=force, highlight=False)
    _setup_logging(logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING))
    ctx.obj = AppContext(verbose=verbose, debug=debug, config_file=config_file, err=err)


class _Formatter(logging.Formatter):
    """pytei's own records (echoed commands, replayed output) as plain lines; other libraries'
    records with their level and name."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "pytei" or record.name.startswith("pytei."):
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=level, handlers=[handler])


class SettingOption(click.Option):
    """An option whose default is a pytei setting: ``--help`` shows the value in effect here
    (after pytei.yaml and PYTEI_* environment) and the setting's name, not just the name."""

    def __init__(self, *args: Any, setting: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        try:
            value = load_settings(env=os.environ).setting(self.setting)
            shown = f"{value.value!r}" if isinstance(value.value, str) else str(value.value)
            where = self.setting if value.source == "default" else f"{self.setting}, from {value.source}"
        except PyteiError:
            shown, where = "?", self.setting
        return record[0], f"{record[1]}  [default: {shown} ({where})]"


def setting_option(*names: str, setting: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*names, cls=SettingOption, setting=setting, **kwargs)


def _print_error(err: PyteiError) -> None:
    click.echo(f"pytei: error: {err.one_line()}", err=True)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: known errors print one line and exit with their code."""
    debug = os.environ.get("PYTEI_DEBUG", "") not in ("", "0") or "--debug" in (argv or sys.argv[1:])
    try:
        result = cli.main(args=argv, prog_name="pytei", standalone_mode=False)
    except PyteiError as err:
        if debug:
            raise
        _print_error(err)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("pytei: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("pytei: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    # standalone_mode=False turns ctx.exit(code) into a returned code.
    sys.exit(result if isinstance(result, int) else 0)
