"""Writing a wheel from files in memory (PEP 427): the engine's extension wheel and the pytei
wheel a runtime image installs are both made this way, without a build backend."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from pytei._version import __version__

__all__ = ["write_wheel_archive"]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel_archive(
    out_dir: Path,
    distribution: str,
    version: str,
    tag: str,
    files: Iterable[tuple[str, bytes]],
    metadata: str,
    *,
    purelib: bool,
    entry_points: str = "",
) -> Path:
    """``<distribution>-<version>-<tag>.whl`` in ``out_dir`` holding ``files`` (archive name,
    content), with METADATA, WHEEL, entry_points.txt and RECORD; written beside and renamed."""
    stem = distribution.replace("-", "_")
    dist_info = f"{stem}-{version}.dist-info"
    members = list(files)
    wheel = (
        f"Wheel-Version: 1.0\nGenerator: pytei {__version__}\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: {tag}\n"
    )
    members += [(f"{dist_info}/METADATA", metadata.encode()), (f"{dist_info}/WHEEL", wheel.encode())]
    if entry_points:
        members.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    record = "\n".join([*(_record_line(n, d) for n, d in members), f"{dist_info}/RECORD,,"]) + "\n"
    members.append((f"{dist_info}/RECORD", record.encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}-{version}-{tag}.whl"
    partial = target.with_suffix(".whl.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name.endswith(".so") or ".so." in name else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    partial.replace(target)
    return target
