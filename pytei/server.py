"""Compatibility alias: ``pytei.server`` (pytei 0.1) is now :mod:`pytei.serving`.

``from pytei.server import ServerProcess, RouterSpec, serve`` keeps working; new code imports
from ``pytei`` (``pytei.serve``, ``pytei.ServerProcess``) or from the serving modules.
"""

from pytei.serving.api import RouterBinary, resolve_router, router_spec, serve, serve_process
from pytei.serving.process import ServerProcess, StopRequested, stop_all, wait_all_ready
from pytei.serving.spec import SCRUBBED_ENV, RouterSpec, describe_exit, router_environment

__all__ = [
    "SCRUBBED_ENV",
    "RouterBinary",
    "RouterSpec",
    "ServerProcess",
    "StopRequested",
    "describe_exit",
    "resolve_router",
    "router_environment",
    "router_spec",
    "serve",
    "serve_process",
    "stop_all",
    "wait_all_ready",
]
