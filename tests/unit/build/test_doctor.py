"""`pytei doctor`: it names the profile a build would take here and why, and what int8 buys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pytei.build.doctor import run_checks
from pytei.build.hardware import Gpu, Machine
from pytei.build.options import BuildOptions
from pytei.cache import Cache
from pytei.cli import cli
from pytei.config import load_settings

GIB = 2**30


def _machine(**changes: object) -> Machine:
    base: dict[str, object] = {
        "os": "linux", "arch": "x86_64", "cpu_vendor": "GenuineIntel", "cpu_model": "Xeon",
        "cpu_flags": frozenset({"avx2", "avx512f", "avx512_vnni"}), "cores": 2,
        "memory_total": 24 * GIB, "memory_available": 20 * GIB,
    }  # fmt: skip
    return Machine(**{**base, **changes})  # type: ignore[arg-type]


def _checks(tmp_path: Path, machine: Machine, profile: str = "") -> dict[str, dict[str, str]]:
    options = BuildOptions.from_settings(load_settings(env={}))
    found = run_checks(options, Cache(tmp_path / "cache"), machine, {"PATH": "/nonexistent"}, profile=profile)
    return {c.name: c.to_json() for c in found}


def test_a_cpu_machine_is_told_ort_and_why(tmp_path: Path) -> None:
    checks = _checks(tmp_path, _machine())
    assert checks["profile"]["detail"].startswith("ort (no NVIDIA GPU; Xeon")
    assert "4-5x candle" in checks["profile"]["detail"]
    assert checks["int8"]["status"] == "ok" and checks["int8"]["detail"].startswith("avx512_vnni:")
    assert "--quantize int8" in checks["int8"]["detail"]


def test_a_gpu_machine_is_told_its_cuda_profile_and_a_named_profile_wins(tmp_path: Path) -> None:
    h200 = _machine(gpus=(Gpu(0, "NVIDIA H200", 90, 143000),))
    assert _checks(tmp_path, h200)["profile"]["detail"].startswith(
        "cuda-hopper (NVIDIA H200: compute capability 9.0)"
    )
    assert "int8 ONNX serving is for CPU" in _checks(tmp_path, h200)["int8"]["detail"]
    named = _checks(tmp_path, h200, profile="cpu")["profile"]["detail"]
    assert named.startswith("cpu (build.profile names it)")


def test_without_int8_dot_products_int8_is_not_recommended(tmp_path: Path) -> None:
    checks = _checks(tmp_path, _machine(cpu_flags=frozenset({"avx2"})))
    assert checks["int8"]["status"] == "info" and "rarely faster" in checks["int8"]["detail"]


def test_a_machine_no_profile_fits_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    checks = _checks(tmp_path, _machine(os="freebsd"))
    assert checks["profile"]["status"] == "warn" and "no profile fits" in checks["profile"]["detail"]


def test_doctor_json_lists_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    names = [c["name"] for c in json.loads(result.output)["checks"]]
    assert {"git", "rust", "profile", "int8", "onnxruntime", "disk", "memory", "cpu"} <= set(names)
