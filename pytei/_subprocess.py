"""The one way pytei runs other programs.

Quiet by default: output is captured and replayed (its tail) when the command fails.  With
``-v`` each command is echoed as ``+ cmd`` on stderr and its output streams through.
A missing program is a :class:`ToolMissingError` naming what to install, never a traceback.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytei.errors import CommandFailedError, ToolMissingError

__all__ = ["Result", "find_tool", "output_tail", "run", "run_to_file", "set_verbose", "verbose"]

# Commands are echoed and failures replayed through logging; the CLI shows pytei's records on
# stderr as plain lines (library users configure logging as they like).
log = logging.getLogger("pytei.run")

_VERBOSE: contextvars.ContextVar[bool] = contextvars.ContextVar("pytei_verbose", default=False)

# What to install when a program is missing.
_INSTALL_HINTS = {
    "git": "install git (e.g. `apt-get install git`)",
    "cargo": "install Rust with rustup (https://rustup.rs) or your distribution's cargo package",
    "rustc": "install Rust with rustup (https://rustup.rs)",
    "protoc": "install protobuf-compiler (e.g. `apt-get install protobuf-compiler`) or set PROTOC",
    "nvcc": "install the CUDA toolkit, or `pip install nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt "
    "nvidia-cuda-runtime nvidia-cuda-cccl` and set build.cuda_home",
    "patch": "install GNU patch (e.g. `apt-get install patch`)",
    "tar": "install tar (e.g. `apt-get install tar`)",
    "nvidia-smi": "install the NVIDIA driver utilities",
    "debootstrap": "install debootstrap (e.g. `apt-get install debootstrap`); it needs root",
}


def set_verbose(value: bool) -> None:
    _VERBOSE.set(value)


def verbose() -> bool:
    return _VERBOSE.get()


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def find_tool(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The absolute path of ``name`` on the PATH that ``env`` gives (or the process PATH)."""
    if os.sep in name:
        path = Path(name)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ToolMissingError(f"{name} is not an executable file", hint=_INSTALL_HINTS.get(path.name))
    search = (env or os.environ).get("PATH", os.defpath)
    found = shutil.which(name, path=search)
    if found is None:
        raise ToolMissingError(
            f"{name} is not installed (not found on PATH)", hint=_INSTALL_HINTS.get(name, f"install {name}")
        )
    return Path(found)


def output_tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
    stream: bool | None = None,
    message: str | None = None,
    hint: str | None = None,
) -> Result:
    """Run ``cmd``; raise :class:`CommandFailedError` (with the output tail) if it fails.

    ``env`` replaces the environment entirely when given (callers build it from os.environ).
    ``stream`` lets output through instead of capturing it; it defaults to verbose mode.
    """
    args = [str(part) for part in cmd]
    program = find_tool(args[0], env)
    args[0] = str(program)
    show = verbose() if stream is None else stream
    _echo(args, cwd)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input_text,
            text=True,
            stdout=None if show else subprocess.PIPE,
            stderr=None if show else subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailedError(
            args,
            -1,
            _text(exc.stdout) + _text(exc.stderr),
            message=f"{Path(args[0]).name} timed out after {timeout}s",
        ) from exc
    stdout = proc.stdout or ""
    stderr = proc.stderr or ""
    if check and proc.returncode != 0:
        combined = (stdout + ("\n" if stdout and stderr else "") + stderr).strip()
        if combined and not show:
            log.error("%s", output_tail(combined))
        raise CommandFailedError(args, proc.returncode, output_tail(combined), message=message, hint=hint)
    return Result(args, proc.returncode, stdout, stderr)


def _echo(args: Sequence[str], cwd: Path | None) -> None:
    if verbose():
        where = f" (in {cwd})" if cwd else ""
        log.info("+ %s%s", shlex.join([Path(args[0]).name, *args[1:]]), where)


def run_to_file(
    cmd: Sequence[str | Path],
    output: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    message: str | None = None,
    hint: str | None = None,
) -> None:
    """Run ``cmd`` with its standard output written, as bytes, to ``output`` (an archive, a
    blob); stderr is captured for the :class:`CommandFailedError` when it fails."""
    args = [str(part) for part in cmd]
    args[0] = str(find_tool(args[0], env))
    _echo(args, cwd)
    with output.open("wb") as sink:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.PIPE,
            check=False,
        )
    if proc.returncode != 0:
        output.unlink(missing_ok=True)
        raise CommandFailedError(
            args, proc.returncode, output_tail(_text(proc.stderr)), message=message, hint=hint
        )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
