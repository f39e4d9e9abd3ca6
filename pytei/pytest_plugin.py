"""pytest plugin: test your application against a real TEI router, served for the session.

Fixtures (nothing runs unless a test asks for one):

- ``pytei_server``: a ready :class:`pytei.serving.process.ServerProcess` (``.url``, ``.pid``,
  ``.log_path``), started once per session and stopped at its end;
- ``pytei_client``: a :class:`pytei.client.Client` connected to it;
- ``pytei_engine``: a :class:`pytei.LocalEngine` of the same model in the test process (TEI's
  engine in-process, ``pytei build --engine``), the same API as ``pytei_client``; skipped, with
  the reason, when no engine is built.

Configure with command-line options or ini keys (the option wins)::

    --pytei-model / pytei_model              model dir, catalogue name or hub id
                                             (default: the serve.default_model setting)
    --pytei-binary / pytei_binary            router binary (default: the one `pytei build` made)
    --pytei-profile / pytei_profile          build profile whose router to use
    --pytei-router-args / pytei_router_args  extra router arguments, shell-quoted
    --pytei-ready-timeout / pytei_ready_timeout

Give paths as ``--pytei-binary=PATH`` (one word): pytest finds its ini file before plugin
options are known, so a separate ``PATH`` would be taken for a test path.

``PYTEI_API_KEY``, when set, protects the router and is given to the client.  Tests that
use the fixtures are skipped, with the reason, when no router is built and none is given.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytei.client import Client
    from pytei.local import LocalEngine
    from pytei.serving.process import ServerProcess

__all__ = ["pytei_client", "pytei_engine", "pytei_server"]

_OPTIONS = {
    "model": "model directory, catalogue name or hub id to serve (default: serve.default_model)",
    "binary": "router binary to run (default: the router `pytei build` installed)",
    "profile": "build profile whose installed router to run",
    "router_args": "extra router arguments, shell-quoted (e.g. '--max-batch-tokens 2048')",
    "ready_timeout": "seconds to wait for the router to become ready",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pytei", "pytei: serve a model with text-embeddings-inference for tests")
    for key, help_text in _OPTIONS.items():
        group.addoption(f"--pytei-{key.replace('_', '-')}", dest=f"pytei_{key}", default=None, help=help_text)
        parser.addini(f"pytei_{key}", help_text, default="")


def _option(config: pytest.Config, key: str) -> str | None:
    value = config.getoption(f"pytei_{key}")
    if value is None:
        value = config.getini(f"pytei_{key}")
    text = str(value).strip() if value is not None else ""
    return text or None


@pytest.fixture(scope="session")
def pytei_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A TEI router serving the configured model for the whole test session."""
    from pytei.cache import Cache  # noqa: PLC0415 (plugin import stays cheap for every pytest run)
    from pytei.config import load_settings  # noqa: PLC0415
    from pytei.errors import RouterNotBuiltError  # noqa: PLC0415
    from pytei.serving.api import router_spec  # noqa: PLC0415
    from pytei.serving.options import ServeOptions, ServeTarget  # noqa: PLC0415
    from pytei.serving.process import ServerProcess  # noqa: PLC0415

    config = request.config
    settings = load_settings(env=os.environ)
    options = ServeOptions.from_settings(settings)
    binary = _option(config, "binary")
    target = ServeTarget(
        model_id=_option(config, "model"),
        port="auto",
        hostname="127.0.0.1",
        profile=_option(config, "profile"),
        binary=Path(binary) if binary else None,
        router_args=tuple(shlex.split(_option(config, "router_args") or "")),
    )
    try:
        spec = router_spec(target, options, Cache.from_settings(settings))
    except RouterNotBuiltError as exc:
        pytest.skip(f"pytei_server: {exc.one_line()} (or pass --pytei-binary)")
    timeout = _option(config, "ready_timeout")
    ready_timeout = float(timeout) if timeout else options.ready_timeout
    with ServerProcess(spec, ready_timeout=ready_timeout, stop_timeout=options.stop_timeout) as server:
        yield server


@pytest.fixture(scope="session")
def pytei_client(pytei_server: ServerProcess) -> Iterator[Client]:
    """A client of the session's router (with ``PYTEI_API_KEY`` when the router wants one)."""
    from pytei.client import Client  # noqa: PLC0415

    with Client(pytei_server.url, api_key=pytei_server.spec.api_key) as client:
        yield client


@pytest.fixture(scope="session")
def pytei_engine(request: pytest.FixtureRequest) -> Iterator[LocalEngine]:
    """TEI's engine in this process, serving the configured model for the whole session."""
    from pytei.errors import EngineNotBuiltError  # noqa: PLC0415
    from pytei.local import LocalEngine  # noqa: PLC0415

    config = request.config
    try:
        engine = LocalEngine(_option(config, "model"), profile=_option(config, "profile"))
    except EngineNotBuiltError as exc:
        pytest.skip(f"pytei_engine: {exc.one_line()}")
    with engine:
        yield engine
