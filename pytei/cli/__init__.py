"""pytei's command line: thin click commands over the library modules.

Each module below defines ``COMMANDS``, the click commands it adds to the ``pytei`` group.
"""

from pytei.cli import bench, build, fork, serve, settings
from pytei.cli._app import AppContext, cli, emit_json, main, pass_app

for _module in (settings, fork, build, serve, bench):
    for _command in _module.COMMANDS:
        cli.add_command(_command)

__all__ = ["AppContext", "cli", "emit_json", "main", "pass_app"]
