"""What launches one router: :class:`RouterSpec` (binary, model, ports, arguments, environment),
and what its exit status and log say when it fails.

Guarantees of every spec:
- the router gets ``--model-id``, ``--hostname`` and ``--port`` explicitly, and an environment
  without the variables clap would otherwise read (an inherited ``HOSTNAME`` or ``PORT`` would
  silently move the listener);
- the API key travels in the environment (``API_KEY``), never in argv, so it is not visible in
  ``ps`` or ``/proc/<pid>/cmdline``.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytei.build.manifest import BuildManifest
from pytei.errors import ConfigError

__all__ = ["SCRUBBED_ENV", "RouterSpec", "describe_exit", "log_hint", "router_environment"]


# Variables the router reads through clap (docs/tei-upstream.md §2.1).  pytei passes what it
# means on the command line; an inherited one would silently change the router (HOSTNAME is set
# by most shells and by Docker, PORT=80 by TEI's own images).  A service's ``env:`` may set them
# back on purpose.
SCRUBBED_ENV = frozenset(
    {
        "MODEL_ID", "REVISION", "TOKENIZATION_WORKERS", "DTYPE", "SERVED_MODEL_NAME", "POOLING",
        "MAX_CONCURRENT_REQUESTS", "MAX_BATCH_TOKENS", "MAX_BATCH_REQUESTS", "MAX_CLIENT_BATCH_SIZE",
        "AUTO_TRUNCATE", "DEFAULT_PROMPT_NAME", "DEFAULT_PROMPT", "DENSE_PATH", "HOSTNAME", "PORT",
        "UDS_PATH", "PAYLOAD_LIMIT", "API_KEY", "JSON_OUTPUT", "DISABLE_SPANS", "OTLP_ENDPOINT",
        "OTLP_SERVICE_NAME", "PROMETHEUS_PORT", "CORS_ALLOW_ORIGIN", "TASK",
    }
)  # fmt: skip

# Router flags pytei sets itself; giving them again in router_args is refused with the reason.
_OWN_FLAGS = {
    "--model-id": "use --model-id (pytei resolves it to a checked local directory)",
    "--hostname": "use --hostname",
    "--port": "use --port",
    "-p": "use --port",
    "--api-key": "use pytei's --api-key or PYTEI_API_KEY (passed to the router in its environment)",
}


def describe_exit(returncode: int) -> str:
    """``-6`` -> "was killed by SIGABRT (the router panicked ...)"; ``1`` -> "exited with status 1"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = {
        "SIGABRT": " (the router panicked: release builds abort on panic)",
        "SIGKILL": " (out of memory, or killed from outside)",
        "SIGSEGV": " (a crash in native code)",
    }.get(name, "")
    return f"was killed by {name}{why}"


# Log patterns that point at a cause, with what to do about it.
_LOG_HINTS = (
    (
        re.compile(r"address already in use", re.IGNORECASE),
        "a port was taken after pytei checked it; try again or use --port auto",
    ),
    (
        re.compile(r"compute cap", re.IGNORECASE),
        "the router was built for another GPU; rebuild it with `pytei build`",
    ),
    (
        re.compile(r"out of memory|CUDA_ERROR_OUT_OF_MEMORY", re.IGNORECASE),
        "not enough GPU memory; lower --max-batch-tokens",
    ),
    (
        re.compile(r"Could not start a suitable backend", re.IGNORECASE),
        "the model does not fit this router's backends (see log)",
    ),
)


def log_hint(tail: str, log_path: Path) -> str:
    for pattern, hint in _LOG_HINTS:
        if pattern.search(tail):
            return f"{hint}; full log: {log_path}"
    return f"see the router's log: {log_path}"


def router_environment(
    base: Mapping[str, str], *, extra: Mapping[str, str] | None = None, api_key: str | None = None
) -> dict[str, str]:
    """``base`` without :data:`SCRUBBED_ENV`, plus ``extra``, plus ``API_KEY`` when given."""
    env = {key: value for key, value in base.items() if key not in SCRUBBED_ENV}
    env.update(extra or {})
    if api_key:
        env["API_KEY"] = api_key
    return env


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class RouterSpec:
    """Everything needed to launch one router.  ``port=None`` means pick a free one."""

    binary: Path
    model_dir: Path
    model_id: str = ""  # what was asked for (hub id, catalogue name or directory), for display
    manifest: BuildManifest | None = field(default=None, compare=False, repr=False)  # None: not pytei's
    name: str = "tei"
    hostname: str = "127.0.0.1"
    port: int | None = None
    prometheus_port: int | None = None  # None: a free one (the router binds it at startup)
    pooling: str | None = None
    router_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the scrubbed environment
    api_key: str | None = field(default=None, repr=False)
    log_path: Path | None = None  # None: a temporary file, removed after a clean stop

    def __post_init__(self) -> None:
        for arg in self.router_args:
            flag = arg.split("=", 1)[0]
            if flag == "--api-key":
                raise ConfigError(
                    "the API key must not be a router argument: argv is visible to every user in `ps`",
                    hint=_OWN_FLAGS[flag],
                )
            if flag in _OWN_FLAGS or re.fullmatch(r"-p\d+", arg):
                raise ConfigError(
                    f"router argument {arg!r} is set by pytei", hint=_OWN_FLAGS.get(flag, "use --port")
                )
            if flag == "--pooling" and self.pooling:
                raise ConfigError("pooling is given twice (--pooling and in the router arguments)")
        given = _flag_value(self.router_args, "--prometheus-port")
        if given is not None and self.prometheus_port is None:
            try:
                object.__setattr__(self, "prometheus_port", int(given))
            except ValueError:
                raise ConfigError(f"--prometheus-port {given!r} is not a port number") from None

    def argv(self, port: int, prometheus_port: int) -> list[str]:
        """The router's command line (never holds the API key)."""
        args = [
            str(self.binary),
            "--model-id",
            str(self.model_dir),
            "--hostname",
            self.hostname,
            "--port",
            str(port),
        ]
        if _flag_value(self.router_args, "--prometheus-port") is None:
            args += ["--prometheus-port", str(prometheus_port)]
        if self.pooling:
            args += ["--pooling", self.pooling]
        dtype = self.manifest.default_dtype if self.manifest is not None else None
        if _flag_value(self.router_args, "--dtype") is None and dtype == "float32":
            # The build decided it (BuildManifest.default_dtype): upstream's float16 default is
            # slower and less exact on a CPU; GPU builds keep the router's own default.
            args += ["--dtype", dtype]
        return args + list(self.router_args)

    @property
    def transport(self) -> str:
        return self.manifest.transport if self.manifest is not None else "http"
