"""Compatibility alias: ``pytei.server`` (pytei 0.1) is now :mod:`pytei.serving.process`.

``from pytei.server import ServerProcess, serve`` keeps working; new code imports from
``pytei`` (``pytei.serve``, ``pytei.ServerProcess``) or from :mod:`pytei.serving.process`.
"""

from pytei.serving.process import *
from pytei.serving.process import __all__ as __all__  # noqa: PLC0414
