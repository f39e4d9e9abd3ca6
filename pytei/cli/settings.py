"""Commands of this module are added to the pytei group by pytei.cli."""

import click

COMMANDS: list[click.Command] = []
