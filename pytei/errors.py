"""Every error pytei raises on purpose, each with its own exit code.

The CLI prints ``str(error)`` as one line (plus ``hint`` when there is one) and exits with
``exit_code``; tracebacks are shown only with ``--debug``.  Library callers catch the classes.
Exit codes are part of pytei's interface: never renumber one, only add.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AddressNotAvailableError",
    "BackendUnavailableError",
    "BenchError",
    "BuildError",
    "CacheError",
    "CommandFailedError",
    "EngineNotBuiltError",
    "DeployError",
    "DockerUnavailableError",
    "ConfigError",
    "FeatureError",
    "ForkDefinitionError",
    "MetricsParseError",
    "HardwareError",
    "HealthCheckError",
    "HostnameError",
    "ImageBuildError",
    "MirrorError",
    "ModelError",
    "PatchError",
    "PortInUseError",
    "ProfileError",
    "PyteiError",
    "RouterNotBuiltError",
    "ServerExitedError",
    "ServerStartTimeout",
    "ServiceNotFoundError",
    "TEIAuthError",
    "TEIBackendError",
    "TEIConnectionError",
    "TEIError",
    "TEIOverloadedError",
    "TEIPayloadTooLargeError",
    "TEIRequestError",
    "TEITimeoutError",
    "TEIUnhealthyError",
    "TEIValidationError",
    "ToolMissingError",
    "ToolVersionError",
    "UpstreamError",
]


class PyteiError(Exception):
    """Base of every error pytei raises deliberately."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """The message and the fix, on one line, as the CLI prints it."""
        text = self.message.strip().replace("\n", " ")
        if self.hint:
            return f"{text} (fix: {self.hint})"
        return text


# --- configuration and cache --------------------------------------------------------------


class ConfigError(PyteiError, ValueError):
    """A configuration file, environment variable or flag has a bad key or value."""

    exit_code = 3


class MirrorError(ConfigError):
    """A git mirror is malformed or points at a location that does not exist."""

    exit_code = 4


class CacheError(PyteiError):
    """The cache is corrupt, locked by another process for too long, or not writable."""

    exit_code = 5


class ForkDefinitionError(ConfigError):
    """``tei_fork/fork.toml`` or ``patches/series`` is missing or malformed."""

    exit_code = 6


# --- upstream and patches ------------------------------------------------------------------


class UpstreamError(PyteiError):
    """The upstream checkout could not be obtained or is not the pinned commit."""

    exit_code = 7


class PatchError(PyteiError):
    """A patch of the series does not apply; names the patch, the file and the hunk."""

    exit_code = 8

    def __init__(
        self,
        message: str,
        *,
        patch: str | None = None,
        file: str | None = None,
        hunk: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.patch = patch
        self.file = file
        self.hunk = hunk


# --- tools, hardware, build ----------------------------------------------------------------


class ToolMissingError(PyteiError, FileNotFoundError):
    """A program pytei needs (git, cargo, protoc, nvcc, ...) is not installed."""

    exit_code = 9


class ToolVersionError(PyteiError):
    """A program is installed but too old (or otherwise unusable) for what was asked."""

    exit_code = 10


class CommandFailedError(PyteiError):
    """A subprocess exited non-zero; carries the command, its status and its output tail."""

    exit_code = 11

    def __init__(
        self,
        cmd: Sequence[str],
        returncode: int,
        output: str = "",
        *,
        message: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.output = output
        shown = " ".join(self.cmd[:4]) + (" ..." if len(self.cmd) > 4 else "")
        super().__init__(message or f"command failed with exit status {returncode}: {shown}", hint=hint)


class HardwareError(PyteiError):
    """Hardware detection found something pytei cannot decide on its own (e.g. mixed GPUs)."""

    exit_code = 12


class ProfileError(ConfigError):
    """An unknown build profile, or a profile that does not fit the request."""

    exit_code = 13


class FeatureError(ConfigError):
    """Cargo features that upstream does not know, or that cannot be combined."""

    exit_code = 14


class BuildError(PyteiError):
    """cargo failed; carries the log path and the likely cause."""

    exit_code = 15

    def __init__(self, message: str, *, log_path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log_path = log_path


class RouterNotBuiltError(PyteiError):
    """No router has been built for the requested profile."""

    exit_code = 16


class EngineNotBuiltError(PyteiError):
    """pytei's in-process engine (the ``pytei_native`` extension) is not installed in this
    Python, or is not the one ``pytei build --engine`` made last."""

    exit_code = 26


class DockerUnavailableError(PyteiError):
    """No Docker Engine answers (or the ``docker`` SDK is not installed)."""

    exit_code = 27


class ImageBuildError(PyteiError):
    """The Docker Engine refused or failed an image build (base or runtime image)."""

    exit_code = 28


class DeployError(ConfigError):
    """A deployment that cannot be rendered as asked (a model the containers cannot reach,
    replicas and GPUs together, an output directory that is not pytei's)."""

    exit_code = 29


# --- models and serving --------------------------------------------------------------------


class ModelError(PyteiError):
    """A model id or directory that the router cannot serve (missing config, tokenizer, weights)."""

    exit_code = 17


class PortInUseError(PyteiError, OSError):
    """The port asked for is already taken."""

    exit_code = 18


class ServerExitedError(PyteiError):
    """The router exited before it became ready (or while serving)."""

    exit_code = 19

    def __init__(
        self, message: str, *, returncode: int | None = None, log_tail: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.returncode = returncode
        self.log_tail = log_tail


class ServerStartTimeout(PyteiError, TimeoutError):
    """The router did not answer ``/health`` with 200 within the ready timeout."""

    exit_code = 20


class ServiceNotFoundError(PyteiError, LookupError):
    """``pytei stop``/``ps`` was given a service name that is not running."""

    exit_code = 21


class HealthCheckError(PyteiError):
    """``pytei health`` found the endpoint not healthy; ``reason`` is one word for scripts."""

    exit_code = 22

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class BenchError(PyteiError):
    """A benchmark could not run as asked (bad workload, unreadable input, no successes)."""

    exit_code = 23


class HostnameError(PyteiError, OSError):
    """``--hostname`` does not resolve to an address."""

    exit_code = 24


class AddressNotAvailableError(PyteiError, OSError):
    """``--hostname`` resolves, but to an address that is not on this host (nothing can bind it)."""

    exit_code = 25


# --- the HTTP client -----------------------------------------------------------------------


class TEIError(PyteiError):
    """Base of every error ``pytei.Client`` raises.

    ``status`` is the HTTP status (None when no response came), ``error_type`` is TEI's
    ``error_type`` field when the body carried one (PascalCase: ``Validation``, ``Backend``...).
    """

    exit_code = 30

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        url: str | None = None,
        batch_index: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.error_type = error_type
        self.url = url
        self.batch_index = batch_index


class TEIRequestError(TEIError):
    """A 4xx that has no more specific class (e.g. 400 empty input, 415, 404)."""

    exit_code = 31


class TEIValidationError(TEIRequestError):
    """422: the input was refused (too many tokens, batch too large, bad option)."""

    exit_code = 32


class TEIPayloadTooLargeError(TEIRequestError):
    """413: the request body is larger than the router's ``--payload-limit``."""

    exit_code = 33


class TEIAuthError(TEIRequestError):
    """401: the router wants ``Authorization: Bearer <api key>`` and did not get the right one."""

    exit_code = 34


class TEIOverloadedError(TEIError):
    """429: the router's ``--max-concurrent-requests`` permits are exhausted."""

    exit_code = 35


class TEIUnhealthyError(TEIError):
    """503: the router's backend reports itself unhealthy."""

    exit_code = 36


class TEIBackendError(TEIError):
    """424: the backend refused or failed the request (wrong model type, inference failure).

    Not a :class:`TEIUnhealthyError` (503): the router is healthy, this request is not servable.
    """

    exit_code = 37


class TEITimeoutError(TEIError, TimeoutError):
    """No response within the client's timeout."""

    exit_code = 38


class TEIConnectionError(TEIError, ConnectionError):
    """The router could not be reached (refused, reset, DNS)."""

    exit_code = 39


class BackendUnavailableError(TEIError):
    """The in-process engine is not available in this installation."""

    exit_code = 40


class MetricsParseError(TEIError, ValueError):
    """``/metrics`` is not valid Prometheus exposition format; says which line and why."""

    exit_code = 41
