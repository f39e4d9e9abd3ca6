"""Base images without a registry: a minimal Debian made by ``debootstrap`` from Debian's
packages, then ``docker import``-ed.  Air-gapped users (and CI) cannot pull ``debian:bookworm``;
they can reach a Debian mirror, or carry one.

The suite is the oldest Debian whose glibc is at least the build machine's (a router linked
against glibc 2.36 needs 2.36 or later) and whose Python runs pytei (3.11+).  The image holds
what the runtime images need and nothing else: Python with venv (pytei inside the container),
the C++ and OpenMP runtimes and OpenSSL the routers link, CA certificates, and nginx for the
balancer of ``pytei deploy compose``.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytei._subprocess import run
from pytei._version import __version__
from pytei.cache import Cache
from pytei.errors import ConfigError, HardwareError, ImageBuildError

__all__ = ["SUITES", "BaseImage", "Suite", "build_base_image", "suite_for_glibc"]


@dataclass(frozen=True)
class Suite:
    name: str
    glibc: tuple[int, int]
    python: str  # the suite's python3 (what the runtime image's wheels are for)
    packages: tuple[str, ...]


_COMMON = ("python3", "python3-venv", "ca-certificates", "libgomp1", "libstdc++6")
SUITES: tuple[Suite, ...] = (
    Suite("bookworm", (2, 36), "3.11", (*_COMMON, "libssl3", "nginx-light")),
    Suite("trixie", (2, 41), "3.13", (*_COMMON, "libssl3t64", "nginx")),
)
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# What a minbase system carries that no container needs (documentation, locales, apt's lists).
_PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/lib/apt/lists",
    "var/cache/apt",
)


def host_glibc() -> tuple[int, int]:
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        raise HardwareError(
            "this machine's C library is not glibc: routers built here cannot run on a Debian base",
            hint="build the router on a glibc Linux (or pass --base with an image that matches)",
        )
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def suite_for_glibc(glibc: tuple[int, int]) -> Suite:
    """The oldest suite whose glibc is at least ``glibc``."""
    for suite in SUITES:
        if suite.glibc >= glibc:
            return suite
    raise ConfigError(
        f"no Debian suite pytei knows has glibc {glibc[0]}.{glibc[1]} or later",
        hint="pass --suite with a newer one, or --base with an image of your own",
    )


def suite_named(name: str) -> Suite:
    for suite in SUITES:
        if suite.name == name:
            return suite
    known = ", ".join(s.name for s in SUITES)
    raise ConfigError(f"unknown Debian suite {name!r}", hint=f"pytei knows {known}")


def debian_arch() -> str:
    machine = platform.machine().lower()
    if machine not in _ARCH:
        raise HardwareError(f"no Debian architecture for {machine!r}", hint="build on x86-64 or arm64")
    return _ARCH[machine]


@dataclass(frozen=True)
class BaseImage:
    tag: str
    image_id: str
    suite: str
    arch: str
    seconds: float
    size_bytes: int


def _labels(suite: Suite, arch: str, mirror: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "pytei base",
        "org.opencontainers.image.description": f"Debian {suite.name} minbase from debootstrap, for pytei images",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "io.pytei.base.suite": suite.name,
        "io.pytei.base.arch": arch,
        "io.pytei.base.python": suite.python,
        "io.pytei.base.mirror": mirror,
    }


def _changes(labels: dict[str, str]) -> list[str]:
    quoted = " ".join(f'"{k}"="{v}"' for k, v in labels.items())
    return [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/bash"]',
        f"LABEL {quoted}",
    ]


def build_base_image(
    client: Any,
    cache: Cache,
    *,
    tag: str,
    suite: Suite,
    mirror: str,
    on_line: Callable[[str], None],
) -> BaseImage:
    """debootstrap ``suite`` into a scratch folder, prune it, import it as ``tag``.  The
    downloaded packages are kept in pytei's cache, so a second base builds without the network."""
    if os.geteuid() != 0:
        raise ImageBuildError(
            "debootstrap needs root to make the base image's files",
            hint="run `sudo pytei image base`, or pass --base with an image you have",
        )
    arch = debian_arch()
    started = time.monotonic()
    packages = cache.area("deploy", "debs", f"{suite.name}-{arch}")
    scratch = Path(tempfile.mkdtemp(prefix="pytei-base-", dir=cache.area("deploy", "tmp")))
    try:
        root = scratch / "root"
        on_line(f"debootstrap {suite.name} ({arch}) from {mirror}")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--arch={arch}",
                f"--include={','.join(suite.packages)}",
                f"--cache-dir={packages}",
                suite.name,
                str(root),
                mirror,
            ],
            message=f"debootstrap of Debian {suite.name} failed",
            hint=f"check that {mirror} is reachable (deploy.debian_mirror) and has {suite.name}",
        )
        for relative in _PRUNE:
            shutil.rmtree(root / relative, ignore_errors=True)
        (root / "var" / "lib" / "apt" / "lists").mkdir(parents=True, exist_ok=True)
        tarball = scratch / "rootfs.tar"
        on_line("packing the root filesystem")
        run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."],
            message="packing the base failed",
        )
        repository, _, version = (
            tag.rpartition(":") if ":" in tag.rsplit("/", maxsplit=1)[-1] else (tag, "", "latest")
        )
        on_line(f"importing as {tag}")
        labels = _labels(suite, arch, mirror)
        answer = client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version, changes=_changes(labels)
        )
        image = client.images.get(tag)
        if not image.id:
            raise ImageBuildError(f"docker import of {tag} returned no image ({str(answer)[:200]})")
        return BaseImage(
            tag, image.id, suite.name, arch, time.monotonic() - started, int(image.attrs.get("Size") or 0)
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
