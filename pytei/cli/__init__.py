"""pytei's command line: thin click commands over the library modules.

Each module of this package defines ``COMMANDS``; ``_app.LAZY_COMMANDS`` says which module
holds which command, and the group imports a module only when one of its commands runs.
"""

from pytei.cli._app import AppContext, cli, emit_json, main, pass_app

__all__ = ["AppContext", "cli", "emit_json", "main", "pass_app"]
