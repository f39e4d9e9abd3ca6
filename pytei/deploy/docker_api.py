"""The Docker Engine through the ``docker`` SDK: one connection, the daemon's errors as
pytei's one-line errors, and a build's JSON stream turned into progress lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pytei.errors import DockerUnavailableError, ImageBuildError

__all__ = ["connect", "follow_build", "image_labels", "image_exists"]

_INSTALL_HINT = "pip install 'pytei[deploy]' (the docker SDK)"


def connect() -> Any:
    """A ``docker.DockerClient`` for the engine ``DOCKER_HOST`` (or the local socket) names."""
    try:
        import docker  # noqa: PLC0415 (an optional dependency)
        import docker.errors  # noqa: PLC0415
    except ImportError:
        raise DockerUnavailableError("the docker Python SDK is not installed", hint=_INSTALL_HINT) from None
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailableError(
            f"no Docker Engine answers: {_first_line(exc)}",
            hint="start the daemon (systemctl start docker), or set DOCKER_HOST to one that runs",
        ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors  # noqa: PLC0415

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_labels(client: Any, tag: str) -> Mapping[str, str]:
    """The labels of a local image; an image that is not there is an error naming how to make it."""
    import docker.errors  # noqa: PLC0415

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise ImageBuildError(
            f"there is no image {tag} on this Docker Engine", hint="build it with `pytei image build`"
        ) from None
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def follow_build(stream: Iterable[Mapping[str, Any]], on_line: Callable[[str], None], what: str) -> str:
    """Read a build's decoded JSON stream to the end: each output line to ``on_line``; the
    image id at the end; an ``error`` entry (a failed RUN, a missing base) as ImageBuildError
    carrying the last lines of output, so the cause is in the message."""
    tail: list[str] = []
    image_id = ""
    for chunk in stream:
        if "error" in chunk:
            detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
            context = " | ".join(line for line in tail[-3:] if line)
            raise ImageBuildError(
                f"{what} failed: {str(detail).strip()}" + (f" (after: {context})" if context else ""),
                hint="run with -v for the whole build log",
            )
        text = chunk.get("stream")
        if isinstance(text, str):
            for line in text.splitlines():
                if line.strip():
                    tail = [*tail[-9:], line.strip()]
                    on_line(line.rstrip())
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("ID"):
            image_id = str(aux["ID"])
    if not image_id:
        raise ImageBuildError(f"{what} ended without an image", hint="run with -v for the whole build log")
    return image_id
