"""The engine's wheel as pytei packs it: installable by pip, libraries under their SONAMEs."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from pytei.build.engine import wheel_library_names, write_wheel


def tree(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "pytei-engine" / "python" / "python" / "pytei_native"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from pytei_native._native import build_info\n")
    return tmp_path / "src"


def runtime(tmp_path: Path) -> list[Path]:
    lib = tmp_path / "lib"
    lib.mkdir()
    real = lib / "libonnxruntime.so.1.22.1"
    real.write_bytes(b"\x7fELF onnxruntime")
    for alias in ("libonnxruntime.so", "libonnxruntime.so.1"):
        (lib / alias).symlink_to(real.name)
    (lib / "libiomp5.so").write_bytes(b"\x7fELF iomp5")
    return sorted(lib.iterdir())


def test_each_library_once_under_the_name_the_extension_needs(tmp_path: Path) -> None:
    names = wheel_library_names(runtime(tmp_path))
    assert sorted(names) == ["libiomp5.so", "libonnxruntime.so.1"]


def test_the_wheel_installs_and_its_record_is_right(tmp_path: Path) -> None:
    extension = tmp_path / "libpytei_native.so"
    extension.write_bytes(b"\x7fELF extension")
    wheel = write_wheel(tmp_path / "out", tree(tmp_path), extension, runtime(tmp_path), "0.1.0")
    assert wheel.name.startswith("pytei_native-0.1.0-cp311-abi3-linux_")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"pytei_native/__init__.py", "pytei_native/_native.abi3.so", "pytei_native/libonnxruntime.so.1"} <= names
        record = archive.read("pytei_native-0.1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if not digest:
                continue
            data = archive.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
        assert archive.getinfo("pytei_native/_native.abi3.so").external_attr >> 16 == 0o755
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (target / "pytei_native" / "libonnxruntime.so.1").read_bytes() == b"\x7fELF onnxruntime"
