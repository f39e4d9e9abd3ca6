"""Build profiles (data in resources/profiles.toml) and choosing one for a machine."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources

from pytei.build.hardware import Machine
from pytei.errors import FeatureError, HardwareError, ProfileError

__all__ = [
    "TRANSPORTS",
    "Profile",
    "Selection",
    "custom_profile",
    "load_profiles",
    "profile_applicability",
    "select_profile",
]

TRANSPORTS = ("http", "grpc")
_DETECT = frozenset({"cpu", "gpu", "jetson", "macos", ""})
_KEYS = frozenset(
    {"description", "features", "compute_cap", "arch", "os", "tools", "deps", "patches", "detect"}
)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    features: tuple[str, ...]
    compute_cap: int = 0
    arch: tuple[str, ...] = ()
    os: str = "linux"
    tools: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    patches: tuple[str, ...] = ()
    detect: str = ""

    @property
    def is_cuda(self) -> bool:
        return self.compute_cap > 0


def load_profiles() -> dict[str, Profile]:
    text = resources.files("pytei").joinpath("resources/profiles.toml").read_text(encoding="utf-8")
    profiles = {}
    for name, entry in tomllib.loads(text).items():
        unknown = set(entry) - _KEYS
        if unknown:
            raise ProfileError(f"profile {name!r} has unknown keys {sorted(unknown)}")
        if entry.get("detect", "") not in _DETECT:
            raise ProfileError(f"profile {name!r} has an unknown detect rule {entry['detect']!r}")
        profiles[name] = Profile(
            name=name,
            description=entry["description"],
            features=tuple(entry["features"]),
            compute_cap=int(entry.get("compute_cap", 0)),
            arch=tuple(entry.get("arch", ())),
            os=entry.get("os", "linux"),
            tools=tuple(entry.get("tools", ())),
            deps=tuple(entry.get("deps", ())),
            patches=tuple(entry.get("patches", ())),
            detect=entry.get("detect", ""),
        )
    return profiles


@dataclass(frozen=True)
class Selection:
    profile: Profile
    reason: str


def profile_applicability(profile: Profile, machine: Machine) -> tuple[bool, str]:
    """Whether ``profile`` can build and run here, and why (not)."""
    if profile.os != machine.os:
        return False, f"for {profile.os}, this is {machine.os}"
    if profile.arch and machine.arch not in profile.arch:
        return False, f"for {'/'.join(profile.arch)}, this CPU is {machine.arch}"
    if profile.is_cuda:
        if profile.detect == "jetson":
            if machine.jetson_model:
                return True, f"{machine.jetson_model} is sm_87"
            return False, "not a Jetson board"
        caps = machine.compute_caps
        if not caps:
            return False, "no NVIDIA GPU found (nvidia-smi)"
        if profile.compute_cap in caps:
            return True, f"GPU compute capability {profile.compute_cap / 10:.1f}"
        return False, f"GPUs here are sm_{'/'.join(map(str, caps))}"
    if "mkl" in profile.deps and machine.cpu_vendor and machine.cpu_vendor != "GenuineIntel":
        return True, f"runs on {machine.cpu_vendor}, but MKL is tuned for Intel CPUs"
    return True, machine.cpu_summary()


def select_profile(
    machine: Machine, profiles: dict[str, Profile], *, compute_cap: int | None = None
) -> Selection:
    """The profile `pytei build` uses here when none is named."""
    if compute_cap:
        matches = [p for p in profiles.values() if p.compute_cap == compute_cap]
        if not matches:
            known = sorted({p.compute_cap for p in profiles.values() if p.compute_cap})
            raise HardwareError(
                f"no profile builds for compute capability {compute_cap}",
                hint=f"profiles exist for {', '.join(map(str, known))}; or give --features and --compute-cap together",
            )
        return Selection(matches[0], f"--compute-cap {compute_cap} given")
    if machine.jetson_model:
        return Selection(profiles["jetson-orin"], f"{machine.jetson_model} detected (sm_87)")
    caps = machine.compute_caps
    if len(caps) > 1:
        listing = ", ".join(f"GPU {g.index} {g.name} sm_{g.compute_cap}" for g in machine.gpus)
        raise HardwareError(
            f"this machine has GPUs of different compute capabilities ({listing})",
            hint="choose one with --compute-cap (a router uses one GPU; set CUDA_VISIBLE_DEVICES when serving)",
        )
    if caps:
        cap = caps[0]
        for profile in profiles.values():
            if profile.detect == "gpu" and profile.compute_cap == cap:
                names = ", ".join(g.name for g in machine.gpus)
                return Selection(profile, f"{names}: compute capability {cap / 10:.1f}")
        supported = sorted({p.compute_cap for p in profiles.values() if p.detect == "gpu"})
        raise HardwareError(
            f"the GPU here has compute capability {cap / 10:.1f}, which TEI v1.9.3 has no build for",
            hint=f"supported: {', '.join(map(str, supported))}; build a CPU profile with --profile cpu",
        )
    for profile in profiles.values():
        if profile.detect in ("cpu", "macos") and profile_applicability(profile, machine)[0]:
            return Selection(profile, f"no NVIDIA GPU; {machine.cpu_summary()}")
    raise HardwareError(
        f"no profile fits this machine ({machine.os}/{machine.arch})",
        hint="name one with --profile or give --features",
    )


_SAFE = re.compile(r"[^a-z0-9]+")


def custom_profile(features: list[str], compute_cap: int, profiles: dict[str, Profile]) -> Profile:
    """A profile for raw ``--features`` (reusing a named one when the features match it)."""
    transports = [f for f in features if f in TRANSPORTS]
    if len(transports) > 1:
        raise FeatureError(
            "http and grpc cannot be built together (upstream's router serves one transport per build)",
            hint="build twice: once with http, once with grpc",
        )
    wanted = tuple(sorted(f for f in features if f not in TRANSPORTS))
    if not wanted:
        raise FeatureError("--features names no backend", hint="add one of candle, ort, candle-cuda, ...")
    for profile in profiles.values():
        if tuple(sorted(profile.features)) == wanted and (compute_cap or 0) == profile.compute_cap:
            return profile
    cuda = any(f.startswith("candle-cuda") for f in wanted)
    if cuda and not compute_cap:
        raise FeatureError(
            f"features {','.join(wanted)} build CUDA code and need a compute capability",
            hint="add --compute-cap (e.g. 87 for Jetson Orin, 90 for H100)",
        )
    if compute_cap and not cuda:
        raise FeatureError(
            f"--compute-cap {compute_cap} given without a CUDA feature", hint="add candle-cuda"
        )
    name = (
        "custom-"
        + _SAFE.sub("-", "-".join(wanted).lower()).strip("-")
        + (f"-sm{compute_cap}" if compute_cap else "")
    )
    patches = ("0001",) if compute_cap == 87 else ()
    return Profile(
        name=name,
        description=f"custom features {','.join(wanted)}" + (f", sm_{compute_cap}" if compute_cap else ""),
        features=wanted,
        compute_cap=compute_cap or 0,
        tools=("nvcc",) if cuda else (),
        deps=tuple(d for d, f in (("onnxruntime", "ort"), ("mkl", "mkl")) if f in wanted),
        patches=patches,
    )
