"""pytei's command line: thin click commands over the library modules."""

from pytei.cli._app import AppContext, cli, emit_json, main, pass_app

__all__ = ["AppContext", "cli", "emit_json", "main", "pass_app"]
