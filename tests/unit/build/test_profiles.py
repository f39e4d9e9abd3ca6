"""Profile selection from recorded nvidia-smi, /proc/cpuinfo, device-tree and platform facts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from pytei.build.hardware import Gpu, Machine, detect_machine, parse_cpuinfo, parse_jetson, parse_nvidia_smi
from pytei.build.profiles import custom_profile, load_profiles, profile_applicability, select_profile
from pytei.errors import FeatureError, HardwareError, ProfileError

# `nvidia-smi --query-gpu=index,name,compute_cap,memory.total --format=csv,noheader,nounits`
SMI = {
    "cuda-volta": "0, Tesla V100-SXM2-16GB, 7.0, 16384\n",
    "cuda-turing": "0, Tesla T4, 7.5, 15360\n",
    "cuda-ampere": "0, NVIDIA A100-SXM4-80GB, 8.0, 81920\n1, NVIDIA A100-SXM4-80GB, 8.0, 81920\n",
    "cuda-ampere-86": "0, NVIDIA A10G, 8.6, 23028\n",
    "cuda-ada": "0, NVIDIA L4, 8.9, 23034\n",
    "cuda-hopper": "0, NVIDIA H100 80GB HBM3, 9.0, 81559\n",
    "cuda-blackwell": "0, NVIDIA B200, 10.0, 183359\n",
    "cuda-blackwell-120": "0, NVIDIA GeForce RTX 5090, 12.0, 32607\n",
}

CPUINFO_INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512bw
"""
CPUINFO_AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7R13 Processor
flags\t\t: fpu sse sse2 fma avx avx2
"""
CPUINFO_GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
CPU architecture: 8
"""
JETSON_DT_MODEL = "NVIDIA Jetson AGX Orin Developer Kit\x00"


def machine(os: str = "linux", arch: str = "x86_64", smi: str = "", cpuinfo: str = CPUINFO_INTEL,
            jetson: str | None = None) -> Machine:  # fmt: skip
    vendor, model, flags = parse_cpuinfo(cpuinfo)
    return Machine(
        os=os, arch=arch, cpu_vendor=vendor, cpu_model=model, cpu_flags=flags,
        gpus=parse_nvidia_smi(smi), jetson_model=parse_jetson(jetson, None), cores=8,
        memory_total=32 * 2**30, memory_available=30 * 2**30,
    )  # fmt: skip


@pytest.mark.parametrize("expected", sorted(SMI))
def test_each_gpu_generation_gets_its_profile(expected: str) -> None:
    selection = select_profile(machine(smi=SMI[expected]), load_profiles())
    assert selection.profile.name == expected
    assert "compute capability" in selection.reason


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # ONNX Runtime (with candle beside it) is the CPU default on Linux, x86-64 and arm64
        ({"arch": "x86_64", "cpuinfo": CPUINFO_INTEL}, "ort"),
        ({"arch": "x86_64", "cpuinfo": CPUINFO_AMD}, "ort"),
        ({"arch": "aarch64", "cpuinfo": CPUINFO_GRAVITON}, "ort"),
        ({"os": "darwin", "arch": "arm64", "cpuinfo": ""}, "metal"),
        ({"os": "darwin", "arch": "x86_64", "cpuinfo": ""}, "cpu-macos"),
        ({"arch": "aarch64", "cpuinfo": CPUINFO_GRAVITON, "jetson": JETSON_DT_MODEL}, "jetson-orin"),
    ],
)
def test_machines_without_discrete_gpus(facts: dict[str, str], expected: str) -> None:
    assert select_profile(machine(**facts), load_profiles()).profile.name == expected


def test_every_profile_is_reachable_by_detection_or_name() -> None:
    profiles = load_profiles()
    assert set(profiles) >= set(SMI) | {"cpu", "cpu-mkl", "cpu-arm64", "ort", "metal", "jetson-orin"}
    assert profiles["jetson-orin"].compute_cap == 87 and profiles["jetson-orin"].patches == ("0001",)
    assert "0003" in profiles["ort"].patches and "onnxruntime" in profiles["ort"].deps
    assert "mkl" in profiles["cpu-mkl"].deps


def test_mixed_gpus_are_refused_unless_a_compute_cap_is_given() -> None:
    mixed = machine(smi="0, NVIDIA A100-SXM4-40GB, 8.0, 40960\n1, NVIDIA H100 PCIe, 9.0, 81559\n")
    with pytest.raises(HardwareError) as info:
        select_profile(mixed, load_profiles())
    assert "different compute capabilities" in str(info.value) and "--compute-cap" in (info.value.hint or "")
    assert select_profile(mixed, load_profiles(), compute_cap=90).profile.name == "cuda-hopper"


def test_unsupported_gpu_is_a_clear_error() -> None:
    with pytest.raises(HardwareError, match=r"compute capability 6\.0"):
        select_profile(machine(smi="0, Tesla P100-PCIE-16GB, 6.0, 16280\n"), load_profiles())
    with pytest.raises(HardwareError, match="no profile builds for compute capability 61"):
        select_profile(machine(), load_profiles(), compute_cap=61)


def test_applicability_explains_itself() -> None:
    profiles = load_profiles()
    amd = machine(cpuinfo=CPUINFO_AMD)
    fits, why = profile_applicability(profiles["cpu-mkl"], amd)
    assert fits and "Intel" in why
    fits, why = profile_applicability(profiles["cuda-hopper"], amd)
    assert not fits and "no NVIDIA GPU" in why
    fits, why = profile_applicability(profiles["metal"], amd)
    assert not fits and "darwin" in why


def test_custom_features_for_jetson_need_patch_0001() -> None:
    profiles = load_profiles()
    profile = custom_profile(["candle-cuda", "http"], 87, profiles)
    assert profile.compute_cap == 87 and "0001" in profile.patches
    # A feature set that matches a named profile reuses it (and its install directory).
    assert custom_profile(["candle", "http"], 0, profiles).name == "cpu"
    with pytest.raises(FeatureError, match="http and grpc"):
        custom_profile(["candle", "http", "grpc"], 0, profiles)
    with pytest.raises(FeatureError, match="compute capability"):
        custom_profile(["candle-cuda"], 0, profiles)


def test_profile_table_rejects_unknown_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytei.build.profiles as module

    class FakeFiles:
        def joinpath(self, _: str) -> FakeFiles:
            return self

        def read_text(self, encoding: str) -> str:
            return '[x]\ndescription = "d"\nfeatures = ["candle"]\nfeatrues = []\n'

    # The importlib.resources that pytei.build.profiles reads its table through (not re-exported).
    monkeypatch.setattr("pytei.build.profiles.resources.files", lambda _: FakeFiles())
    with pytest.raises(ProfileError, match="unknown keys"):
        module.load_profiles()


def test_detect_machine_reads_a_recorded_filesystem(tmp_path: Path) -> None:
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text(CPUINFO_GRAVITON)
    (tmp_path / "proc" / "device-tree" / "model").write_text(JETSON_DT_MODEL)

    def no_gpus(env: Mapping[str, str], notes: list[str]) -> tuple[Gpu, ...]:
        return ()

    found = detect_machine({}, root=tmp_path, gpu_query=no_gpus)
    assert found.jetson_model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert found.cpu_vendor == "ARM" and "asimd" in found.cpu_flags


def test_nvidia_smi_parsing() -> None:
    gpus = parse_nvidia_smi(SMI["cuda-ampere"] + "\n")
    assert [g.compute_cap for g in gpus] == [80, 80] and gpus[1].index == 1 and gpus[0].memory_mib == 81920
    assert parse_nvidia_smi("0, NVIDIA GB10, 12.1, [N/A]\n")[0].compute_cap == 121
    with pytest.raises(HardwareError):
        parse_nvidia_smi("garbage\n")
