"""Runtime images: a router pytei built (from its manifest), the runtime libraries its profile
needs, pytei itself (so ``pytei serve -c`` runs inside), and optionally the model, built
through the Docker SDK on a base of the user's choosing (``pytei image base`` by default).

The image runs as an unprivileged user on port 8080, answers a ``HEALTHCHECK`` on ``/health``,
keeps everything it writes under ``/tmp`` (so the root filesystem can be read-only), and
carries OCI labels from the build manifest.  The API key is never part of it: it comes from
``PYTEI_API_KEY`` (the environment or a mounted secret) when the container starts.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytei._version import __version__
from pytei.build.installs import BINARY_NAME, InstalledRouter
from pytei.cache import Cache
from pytei.deploy.docker_api import follow_build, image_labels
from pytei.deploy.wheels import CUDA_RUNTIME_WHEELS, download_wheels, pytei_requirements, write_pytei_wheel
from pytei.errors import ImageBuildError

__all__ = ["BuiltImage", "ImageSpec", "build_image", "default_tag", "dockerfile", "labels_for"]

PORT = 8080
UID = 10001
ROUTER_DIR = "/opt/pytei/router"
MODELS_DIR = "/models"
_HEALTHCHECK = """\
# The container's HEALTHCHECK: GET /health on the router's port (stdlib only, no curl).
import os, sys, urllib.request
port = os.environ.get("PYTEI_SERVE_PORT", "8080")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
"""


@dataclass(frozen=True)
class ImageSpec:
    router: InstalledRouter
    base: str
    tag: str
    model_id: str | None = None  # what the user named (a catalogue name, hub id or folder)
    model_dir: Path | None = None  # the folder baked in (prepared for the router's backend)
    startup_seconds: int = 600  # HEALTHCHECK start period: load plus warm-up


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    labels: Mapping[str, str]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "model"


def model_folder(model_id: str) -> str:
    return _slug(Path(model_id.rstrip("/")).name)


def default_tag(router: InstalledRouter, model_id: str | None) -> str:
    name = f"pytei/{_slug(router.profile)}" + (f"-{model_folder(model_id)}" if model_id else "")
    return f"{name}:{__version__}"


def labels_for(spec: ImageSpec, base_labels: Mapping[str, str]) -> dict[str, str]:
    manifest = spec.router.manifest
    labels = {
        "org.opencontainers.image.title": f"pytei {spec.router.profile}",
        "org.opencontainers.image.description": "text-embeddings-inference built and served by pytei",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.revision": manifest.fork_commit,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "org.opencontainers.image.base.name": spec.base,
        "io.pytei.profile": manifest.profile,
        "io.pytei.install-name": manifest.install_name,
        "io.pytei.features": ",".join(manifest.features),
        "io.pytei.transport": manifest.transport,
        "io.pytei.device": manifest.device,
        "io.pytei.compute-cap": str(manifest.compute_cap or ""),
        "io.pytei.build-mode": manifest.mode,
        "io.pytei.fork-commit": manifest.fork_commit,
        "io.pytei.upstream": manifest.upstream.get("ref", "") or manifest.upstream.get("commit", ""),
        "io.pytei.patches": ",".join(p.name for p in manifest.patches),
        "io.pytei.port": str(PORT),
        "io.pytei.startup-seconds": str(spec.startup_seconds),
    }
    if spec.model_id:
        labels["io.pytei.model"] = spec.model_id
        labels["io.pytei.model-path"] = f"{MODELS_DIR}/{model_folder(spec.model_id)}"
    if base_labels.get("io.pytei.base.suite"):
        labels["io.pytei.base.suite"] = base_labels["io.pytei.base.suite"]
    return labels


def dockerfile(spec: ImageSpec) -> str:
    """Two stages: the venv is made where the wheels are, and only the venv reaches the image."""
    env = {
        "PATH": "/opt/pytei/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTEI_HOME": "/tmp/pytei",
        "PYTEI_SERVE_BINARY": f"{ROUTER_DIR}/{BINARY_NAME}",
        "PYTEI_SERVE_HOSTNAME": "0.0.0.0",
        "PYTEI_SERVE_PORT": str(PORT),
        "HOME": "/tmp",
    }
    model_lines = ""
    if spec.model_id:
        folder = model_folder(spec.model_id)
        env["PYTEI_SERVE_DEFAULT_MODEL"] = f"{MODELS_DIR}/{folder}"
        env["HF_HUB_OFFLINE"] = "1"
        model_lines = f"COPY model/ {MODELS_DIR}/{folder}/\n"
    env_lines = " \\\n    ".join(f'{key}="{value}"' for key, value in env.items())
    start = max(10, spec.startup_seconds)
    return f"""\
# Made by pytei {__version__} (pytei image build); the router and its manifest are pytei's build.
FROM {spec.base} AS venv
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/pytei/venv \\
 && /opt/pytei/venv/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \\
      --find-links /tmp/wheels pytei -r /tmp/wheels/requirements.txt

FROM {spec.base}
RUN useradd --system --uid {UID} --user-group --home-dir /tmp --no-create-home --shell /usr/sbin/nologin pytei
COPY --from=venv /opt/pytei/venv /opt/pytei/venv
COPY router/ {ROUTER_DIR}/
COPY healthcheck.py /opt/pytei/healthcheck.py
{model_lines}ENV {env_lines}
USER {UID}:{UID}
WORKDIR /tmp
EXPOSE {PORT}
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period={start}s --retries=3 \\
  CMD ["python3", "/opt/pytei/healthcheck.py"]
ENTRYPOINT ["pytei", "serve"]
"""


def write_context(spec: ImageSpec, context: Path, wheels: Path, requirements: list[str]) -> None:
    router_out = context / "router"
    # links stay links: libonnxruntime.so -> .so.1 -> .so.1.22.1 would otherwise be three copies
    shutil.copytree(spec.router.binary.parent, router_out, symlinks=True)
    (context / "wheels").mkdir()
    for wheel in wheels.glob("*.whl"):
        shutil.copy2(wheel, context / "wheels" / wheel.name)
    write_pytei_wheel(context / "wheels")
    (context / "wheels" / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (context / "healthcheck.py").write_text(_HEALTHCHECK)
    if spec.model_dir is not None:
        shutil.copytree(spec.model_dir, context / "model", symlinks=False)
    (context / "Dockerfile").write_text(dockerfile(spec))
    _readable(context)


def _readable(context: Path) -> None:
    """World-readable files (executables stay executable): pytei keeps its cache private
    (0600), and the image's user is not the one that built it."""
    for path in context.rglob("*"):
        mode = path.stat().st_mode
        executable = path.is_dir() or mode & 0o100
        path.chmod(0o755 if executable else 0o644)


def build_image(client: Any, cache: Cache, spec: ImageSpec, on_line: Callable[[str], None]) -> BuiltImage:
    """Build ``spec`` on the engine ``client`` talks to; the context is made in pytei's cache
    and removed afterwards, whatever happens."""
    started = time.monotonic()
    base_labels = image_labels(client, spec.base)  # a missing base fails here, before any work
    arch = base_labels.get("io.pytei.base.arch", "amd64")
    python = base_labels.get("io.pytei.base.python", "3.11")
    glibc = (2, 41) if base_labels.get("io.pytei.base.suite") == "trixie" else (2, 36)
    extra = list(CUDA_RUNTIME_WHEELS) if spec.router.manifest.device == "cuda" else []
    on_line(f"wheels for CPython {python} ({arch})")
    requirements = [*pytei_requirements(), *extra]
    wheels = download_wheels(cache, requirements, python=python, arch=arch, glibc=glibc)
    context = Path(tempfile.mkdtemp(prefix="pytei-image-", dir=cache.area("deploy", "tmp")))
    try:
        write_context(spec, context, wheels, requirements)
        labels = labels_for(spec, base_labels)
        stream = client.api.build(
            path=str(context), tag=spec.tag, rm=True, forcerm=True, decode=True, pull=False, labels=labels
        )
        image_id = follow_build(stream, on_line, f"building {spec.tag}")
    finally:
        shutil.rmtree(context, ignore_errors=True)
    image = client.images.get(image_id)
    if not image.id:
        raise ImageBuildError(f"the engine has no image {image_id} after building {spec.tag}")
    return BuiltImage(
        spec.tag, image.id, int(image.attrs.get("Size") or 0), time.monotonic() - started, labels
    )
