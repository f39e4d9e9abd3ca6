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
from typing import Any

from pytei.build.manifest import BuildManifest
from pytei.errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "SCRUBBED_ENV",
    "RouterSpec",
    "describe_exit",
    "log_hint",
    "router_environment",
    "secrets_in",
]


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

# `pytei serve --log-level` -> TEI's LOG_LEVEL (tracing's EnvFilter).  "quiet" keeps TEI's
# start-up and warnings but not its INFO line per request (http/grpc server "Success").
LOG_LEVELS = {
    "quiet": "info,text_embeddings_router::http::server=warn,text_embeddings_router::grpc::server=warn",
    "info": "info",
    "debug": "debug",
    "warn": "warn",
    "error": "error",
}

# Environment variables of the router whose values are secrets (TEI reads them through clap).
_SECRET_ENV = ("API_KEY", "HF_TOKEN", "HF_API_TOKEN", "HUGGING_FACE_HUB_TOKEN")

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


_ERROR_LINE = re.compile(r"^Error: (.+)$", re.MULTILINE)
_CLAP_ERROR = re.compile(r"^error: (.+)$", re.MULTILINE)  # a rejected argument
_FRAME = re.compile(r"^\s+\d+: ")


def router_error(tail: str) -> str | None:
    """The router's own last words: anyhow's ``Error: ...`` and its ``Caused by:`` chain, on one
    line (TEI prints them before the backtrace when it exits on an error)."""
    matches = list(_ERROR_LINE.finditer(tail))
    if not matches:
        clap = list(_CLAP_ERROR.finditer(tail))
        return clap[-1].group(1).strip() if clap else None
    last = matches[-1]
    parts = [last.group(1).strip()]
    lines = tail[last.end() :].splitlines()
    if len(lines) > 2 and lines[1].strip() == "" and lines[2].strip() == "Caused by:":
        for line in lines[3:]:
            if not line.strip() or _FRAME.match(line):
                break
            parts.append(line.strip())
    text = parts[0] + (": " + " ".join(parts[1:]) if len(parts) > 1 else "")
    return text if len(text) <= 400 else text[:397] + "..."


def log_hint(tail: str, log_path: Path) -> str:
    for pattern, hint in _LOG_HINTS:
        if pattern.search(tail):
            return f"{hint}; full log: {log_path}"
    return f"see the router's log: {log_path}"


def secrets_in(env: Mapping[str, str]) -> list[str]:
    """Values of the router's environment that must never reach a log pytei keeps: the API key
    and the hub tokens TEI reads through clap."""
    return [value for name in _SECRET_ENV if (value := env.get(name))]


def router_environment(
    base: Mapping[str, str], *, extra: Mapping[str, str] | None = None, api_key: str | None = None
) -> dict[str, str]:
    """``base`` without :data:`SCRUBBED_ENV`, plus ``extra``, plus ``API_KEY`` when given."""
    env = {key: value for key, value in base.items() if key not in SCRUBBED_ENV}
    env.update(extra or {})
    if api_key:
        env["API_KEY"] = api_key
    return env


def flag_value(args: Sequence[str], flag: str) -> str | None:
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
    group: str = ""  # the service this router belongs to ("": its own name); `--gpus` shares one
    log_level: str | None = None  # a LOG_LEVEL filter for TEI (None: QUIET_LOG_LEVEL, see environment)

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
        given = flag_value(self.router_args, "--prometheus-port")
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
        if flag_value(self.router_args, "--prometheus-port") is None:
            args += ["--prometheus-port", str(prometheus_port)]
        if self.pooling:
            args += ["--pooling", self.pooling]
        dtype = self.manifest.default_dtype if self.manifest is not None else None
        if flag_value(self.router_args, "--dtype") is None and dtype == "float32":
            # The build decided it (BuildManifest.default_dtype): upstream's float16 default is
            # slower and less exact on a CPU; GPU builds keep the router's own default.
            args += ["--dtype", dtype]
        if self.model_id and flag_value(self.router_args, "--served-model-name") is None:
            # /info and the OpenAI route's `model` then say what the user asked for, not the
            # cache directory pytei resolved it to.
            args += ["--served-model-name", self.model_id]
        return args + list(self.router_args)

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The router's environment: ``base`` scrubbed, quiet request logging unless a level is
        asked for (``log_level``, a service's ``env: LOG_LEVEL``, an inherited ``LOG_LEVEL``),
        plain text (``NO_COLOR``), the service's ``env:`` and the API key."""
        extra = dict(self.env)
        if self.log_level is not None:
            extra["LOG_LEVEL"] = LOG_LEVELS.get(self.log_level, self.log_level)
        elif "LOG_LEVEL" not in extra and "LOG_LEVEL" not in base:
            extra["LOG_LEVEL"] = LOG_LEVELS["quiet"]
        extra.setdefault("NO_COLOR", "1")
        return router_environment(base, extra=extra, api_key=self.api_key)

    @property
    def service(self) -> str:
        return self.group or self.name

    def to_json(self) -> dict[str, Any]:
        """Everything, the API key included: only for the private pipe to a supervisor process."""
        return {
            "binary": str(self.binary),
            "model_dir": str(self.model_dir),
            "model_id": self.model_id,
            "manifest": None if self.manifest is None else self.manifest.to_json(),
            "name": self.name,
            "hostname": self.hostname,
            "port": self.port,
            "prometheus_port": self.prometheus_port,
            "pooling": self.pooling,
            "router_args": list(self.router_args),
            "env": dict(self.env),
            "api_key": self.api_key,
            "log_path": None if self.log_path is None else str(self.log_path),
            "group": self.group,
            "log_level": self.log_level,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouterSpec:
        manifest = data.get("manifest")
        log_path = data.get("log_path")
        return cls(
            binary=Path(data["binary"]),
            model_dir=Path(data["model_dir"]),
            model_id=str(data.get("model_id", "")),
            manifest=None if manifest is None else BuildManifest.from_json(manifest),
            name=str(data["name"]),
            hostname=str(data["hostname"]),
            port=data.get("port"),
            prometheus_port=data.get("prometheus_port"),
            pooling=data.get("pooling"),
            router_args=tuple(data.get("router_args", ())),
            env={str(k): str(v) for k, v in data.get("env", {}).items()},
            api_key=data.get("api_key"),
            log_path=None if log_path is None else Path(log_path),
            group=str(data.get("group", "")),
            log_level=data.get("log_level"),
        )

    @property
    def transport(self) -> str:
        return self.manifest.transport if self.manifest is not None else "http"
