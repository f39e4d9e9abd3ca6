"""Deciding what ``pytei build`` will do: profile, features, tools, sources, cargo argv, env.

Everything here runs for ``--dry-run`` too (it fetches upstream and prepares the build tree,
which is cheap) so the printed plan is the plan that would run; nothing here compiles.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytei._subprocess import run
from pytei._version import __version__
from pytei.build.cuda import CudaPlan, cudarc_version_source, plan_cuda
from pytei.build.engine import ENGINE_PACKAGE, engine_env, engine_features, prepare_engine_tree
from pytei.build.gitsources import ProvidedSource, SourceProvider, patch_config_args, read_git_patches
from pytei.build.hardware import Machine
from pytei.build.linklibs import NativeRequest
from pytei.build.manifest import Artifact, BuildMode, Device, Dtype, Transport, default_dtype_for, device_for
from pytei.build.modes import FAST_PROFILE, profile_config_args
from pytei.build.options import BuildOptions, BuildRequest
from pytei.build.profiles import Profile, custom_profile, load_profiles, profile_applicability, select_profile
from pytei.build.sourceplan import check_cudarc_accepts, finish_sources, provide_sources
from pytei.build.toolchain import (
    find_protoc,
    find_rust,
    pinned_rust_version,
    protoc_supports_optional,
)
from pytei.cache import Cache
from pytei.errors import (
    BuildError,
    CommandFailedError,
    FeatureError,
    ProfileError,
    ToolVersionError,
)
from pytei.fork.upstream import Upstream

__all__ = ["BuildPlan", "BuildRequest", "choose_profile", "count_units", "make_plan"]

ROUTER_PACKAGE = "text-embeddings-router"
# Mutually exclusive router features (router/src/lib.rs compile_error! guards).
_EXCLUSIVE = [("http", "grpc"), ("grpc", "google"), ("static-linking", "dynamic-linking")]


@dataclass
class BuildPlan:
    profile: Profile
    reason: str
    transport: Transport
    device: Device
    default_dtype: Dtype | None
    features: list[str]
    mode: BuildMode
    cargo_profile: str
    jobs: int
    jobs_reason: str
    upstream: dict[str, str]
    fork_commit: str
    patches: list[dict[str, str]]
    crates: list[dict[str, str]]
    toolchain: dict[str, str]
    tools: dict[str, str]
    native_libs: dict[str, str]
    env: dict[str, str]  # what pytei sets for cargo (secrets never appear here)
    cargo_argv: list[str]
    source_dir: str
    target_dir: str
    install_dir: Path
    install_name: str
    artifact: Artifact = "router"  # or "engine": pytei_native, packed as a wheel into install_dir
    natives: tuple[NativeRequest, ...] = ()  # what execute_plan provides before cargo runs
    sources: list[ProvidedSource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    needed: list[str] = field(default_factory=list)  # what the build gets first (this machine lacks it)
    full_env: dict[str, str] = field(default_factory=dict, repr=False)
    compiled_packages: int = 0
    units: int = 0  # cargo units this build runs (compilations and build-script runs)
    units_exact: bool = False  # from cargo's unit graph (else estimated from the packages)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("full_env")
        data.pop("natives")
        data["install_dir"] = str(self.install_dir)
        data["profile"] = {
            "name": self.profile.name,
            "description": self.profile.description,
            "compute_cap": self.profile.compute_cap,
            "required_patches": list(self.profile.patches),
            "why": self.reason,
        }
        data["sources"] = [s.to_json() for s in self.sources]
        return data


def choose_profile(
    request: BuildRequest, machine: Machine, profiles: dict[str, Profile] | None = None
) -> tuple[Profile, str]:
    """The profile a request builds and why (cheap: nothing is fetched)."""
    profiles = profiles if profiles is not None else load_profiles()
    if request.features and request.profile:
        raise FeatureError(
            "give either --profile or --features, not both", hint="--features replaces a profile"
        )
    if request.features:
        profile = custom_profile(list(request.features), request.compute_cap or 0, profiles)
        return profile, f"--features {','.join(request.features)}"
    if request.profile:
        if request.profile not in profiles:
            close = difflib.get_close_matches(request.profile, list(profiles), n=1)
            raise ProfileError(
                f"unknown profile {request.profile!r}",
                hint=(f"did you mean {close[0]!r}? " if close else "") + "see `pytei build --list-profiles`",
            )
        profile = profiles[request.profile]
        if request.compute_cap and request.compute_cap != profile.compute_cap:
            raise ProfileError(
                f"profile {profile.name} builds for compute capability {profile.compute_cap or 'none'}, "
                f"not {request.compute_cap}",
                hint="drop --compute-cap, or pick the profile for that capability",
            )
        return profile, f"--profile {profile.name}"
    selection = select_profile(machine, profiles, compute_cap=request.compute_cap)
    return selection.profile, f"detected: {selection.reason}"


def _router_features(git: Any, commit: str) -> dict[str, list[str]]:
    text = git.out("show", f"{commit}:router/Cargo.toml")
    features = tomllib.loads(text).get("features", {})
    return {str(k): list(v) for k, v in features.items()}


def _final_features(
    profile: Profile, request: BuildRequest, known: dict[str, list[str]]
) -> tuple[list[str], Transport]:
    features = list(profile.features)
    in_features = [f for f in request.features if f in ("http", "grpc")]
    transport: Transport = request.transport or ("grpc" if in_features[:1] == ["grpc"] else "http")
    if in_features and request.transport and in_features[0] != request.transport:
        raise FeatureError(
            "http and grpc cannot be built together (upstream's router serves one transport per build)",
            hint="pick one of --http / --grpc",
        )
    features = [f for f in features if f not in ("http", "grpc")] + [transport]
    unknown = [f for f in features if f not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        raise FeatureError(
            f"unknown cargo feature {unknown[0]!r} for text-embeddings-router",
            hint=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(sorted(known))}",
        )
    for a, b in _EXCLUSIVE:
        if a in features and b in features:
            raise FeatureError(
                f"features {a} and {b} cannot be combined (upstream refuses to compile them together)"
            )
    return features, transport


def _jobs(options: BuildOptions, request: BuildRequest, machine: Machine) -> tuple[int, str]:
    if request.jobs:
        return request.jobs, "--jobs"
    if options.jobs > 0:
        return options.jobs, "build.jobs setting"
    per_job = options.job_memory_gib * 2**30
    by_memory = (
        max(1, int(machine.memory_available // per_job)) if machine.memory_available else machine.cores
    )
    jobs = max(1, min(machine.cores, by_memory))
    gib = machine.memory_available / 2**30
    return jobs, f"{machine.cores} cores, {gib:.1f} GiB available, ~{per_job / 2**30:.1f} GiB per job"


def _cargo_tree(argv: list[str], cwd: Path, env: Mapping[str, str]) -> set[str]:
    try:
        result = run(
            argv, cwd=cwd, env=env, stream=False, message="cargo could not resolve the dependency graph"
        )
    except CommandFailedError as exc:
        raise BuildError(
            exc.message + f": {exc.output.splitlines()[-1] if exc.output else ''}",
            hint="configure git mirrors (PYTEI_GIT_MIRRORS) and check access to crates.io",
        ) from exc
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def make_plan(
    options: BuildOptions,
    cache: Cache,
    request: BuildRequest,
    machine: Machine,
    *,
    resolve_sources: bool = True,
    prepare_tree: bool = True,
    planning: bool = False,
) -> BuildPlan:
    """The whole plan; ``resolve_sources=False`` skips providing git sources and ``cargo tree``
    (both need the crate registry), leaving ``sources`` empty.  The build tree is checked out
    at the fork commit unless ``prepare_tree=False`` (a dry run while a build of the same
    profile runs: its tree is read as it is).  Call it holding the profile's build lock."""
    profiles = load_profiles()
    profile, reason = choose_profile(request, machine, profiles)
    warnings: list[str] = []
    applies, why = profile_applicability(profile, machine)
    if not applies:
        warnings.append(f"profile {profile.name} does not fit this machine ({why}); building it anyway")
    upstream = Upstream(options.fork, cache)
    fetched_from = upstream.fetch()
    series_names = [p.name for p in upstream.fork.patches]
    for number in profile.patches:
        if not any(name.startswith(f"{number}-") for name in series_names):
            raise ProfileError(
                f"profile {profile.name} needs patch {number}, which the series does not have",
                hint="restore it in patches/series",
            )
    fork_commit = upstream.series_commit()
    known_features = _router_features(upstream.git, fork_commit)
    features, transport = _final_features(profile, request, known_features)
    if request.engine:
        features = engine_features(features)

    base = cache.area("builds", profile.name)
    source_dir = base / "src"
    target_dir = base / "target"
    # gRPC routers are a different program, a fast build or one with only some flash-attention
    # kernels a different binary: each gets its own install beside the others (`pytei which` /
    # `serve --profile P` take the newest of P's).
    flash = request.flash.suffix() if profile.is_cuda else ""
    install_name = (
        profile.name
        + flash
        + ("-grpc" if transport == "grpc" and not request.engine else "")
        + ("-fast" if request.mode == "fast" else "")
    )
    install_dir = cache.root / ("engines" if request.engine else "routers") / install_name
    if prepare_tree or not (source_dir / ".git").is_file():
        _prepare_tree(upstream, source_dir, fork_commit)
    # The engine is its own workspace in the tree (pytei/build/engine.py), with its own target.
    package_args = ["-p", ROUTER_PACKAGE]
    if request.engine:
        package_args = ["--manifest-path", str(prepare_engine_tree(source_dir)), "-p", ENGINE_PACKAGE]
        target_dir = base / "target-engine"

    env = dict(upstream.git.env)  # os.environ + git mirror rules
    pinned = pinned_rust_version(source_dir)
    rust = find_rust(env, pinned)
    shown: dict[str, str] = {}
    if rust.toolchain:
        shown["RUSTUP_TOOLCHAIN"] = rust.toolchain
    tools: dict[str, str] = {"cargo": str(rust.cargo), "rustc": rust.rustc_version_line}
    if transport == "grpc" or "python" in features:
        protoc = find_protoc(env, options.protoc)
        build_rs = upstream.git.run("show", f"{fork_commit}:router/build.rs", check=False).stdout
        ok, note = protoc_supports_optional(protoc, "--experimental_allow_proto3_optional" in build_rs)
        if not ok:
            raise ToolVersionError(
                note, hint="install protoc 3.15 or newer (apt-get install protobuf-compiler)"
            )
        shown["PROTOC"] = str(protoc.path)
        tools["protoc"] = f"{protoc.path} ({protoc.version}; {note})"
    cuda: CudaPlan | None = None
    if profile.is_cuda:
        cuda = plan_cuda(
            cache=cache,
            env=env,
            compute_cap=profile.compute_cap,
            cuda_home=options.cuda_home,
            jetson=profile.detect == "jetson",
            flash=any(f in ("candle-cuda", "candle-cuda-turing") for f in features),
            selection=request.flash,
            memory_available=machine.memory_available,
            cores=machine.cores,
            planning=planning,
        )
        shown.update(cuda.env)
        tools.update(cuda.tools)
        warnings.extend(cuda.notes)
    native_libs: dict[str, str] = {}
    natives: list[NativeRequest] = []
    rustflags = "-C target-cpu=native" if request.native else ""
    if "onnxruntime" in profile.deps:
        version = options.onnxruntime_version
        configured = options.onnxruntime_dir
        natives.append(NativeRequest("onnxruntime", version, configured))
        location = configured or str(cache.root / "native" / f"onnxruntime-{version}" / "lib")
        shown["ORT_LIB_LOCATION"] = location
        shown["ORT_PREFER_DYNAMIC_LINK"] = "1"
        # The router loads libonnxruntime from its own directory, where pytei installs it.
        rustflags = (rustflags + " -C link-arg=-Wl,-rpath,$ORIGIN").strip()
        native_libs["onnxruntime"] = configured or f"onnxruntime=={version} wheel"
    if cuda is not None and cuda.pin is not None:
        natives.append(NativeRequest("cuda", cuda.pin.series))
        native_libs["cuda"] = f"CUDA {cuda.pin.series} wheels ({', '.join(cuda.pin.wheels)})"
    if "mkl" in profile.deps:
        version = options.mkl_version
        configured = options.mkl_root
        natives.append(NativeRequest("mkl", version, configured))
        shown["MKLROOT"] = configured or str(cache.root / "native" / f"mkl-{version}")
        native_libs["mkl"] = configured or f"mkl-static=={version} wheels"
        # MKL is linked statically, but its OpenMP runtime (libiomp5.so) dynamically: pytei
        # installs it beside the router, which finds it there.
        if "$ORIGIN" not in rustflags:
            rustflags = (rustflags + " -C link-arg=-Wl,-rpath,$ORIGIN").strip()
    if request.engine and "$ORIGIN" not in rustflags:
        # The extension finds what it links, and what cudarc dlopens (the CUDA libraries, which
        # pytei.local links into the package), beside itself: a process's LD_LIBRARY_PATH is
        # read once at its start, too early for an import.
        rustflags = (rustflags + " -C link-arg=-Wl,-rpath,$ORIGIN").strip()
    # Always set: it replaces upstream's .cargo/config.toml `-C target-cpu=native`.
    shown["RUSTFLAGS"] = rustflags
    shown["CARGO_NET_GIT_FETCH_WITH_CLI"] = "true"
    shown["GIT_SHA"] = fork_commit
    shown["DOCKER_LABEL"] = f"pytei-{__version__}+{profile.name}.{fork_commit[:12]}"
    shown["CARGO_TERM_COLOR"] = "never"
    if request.engine:
        shown.update(engine_env(features))
    full_env = {**env, **shown}

    jobs, jobs_reason = _jobs(options, request, machine)
    cargo_profile = FAST_PROFILE if request.mode == "fast" else "release"
    git_patches = read_git_patches(source_dir) if resolve_sources else []
    provider = SourceProvider(cache, upstream.git.env, upstream.fork, full_env)
    sources = provide_sources(provider, git_patches, source_dir)
    patch_args = patch_config_args(git_patches, sources)
    profile_args = profile_config_args(cargo_profile)
    feature_args = ["--no-default-features", "--features", ",".join(features)]
    tree_argv = [
        "cargo", "tree", *package_args, *feature_args, "-e", "normal,build",
        "--prefix", "none", "--format", "{p}", *patch_args,
    ]  # fmt: skip
    compiled: set[str] = set()
    if resolve_sources:
        compiled = _cargo_tree(tree_argv, source_dir, full_env)
        finish_sources(provider, sources, compiled, options.cudarc != "mirror", warnings)
        if cuda is not None and "cudarc" in compiled:
            tools["cudarc"] = _cudarc_check(
                tree_argv, source_dir, full_env, sources, tools["nvcc"], cuda.nvcc_version
            )

    cargo_argv = [
        "cargo", "build", "--profile", cargo_profile, *package_args,
        *(["--lib"] if request.engine else ["--bin", ROUTER_PACKAGE]),
        *feature_args, "--jobs", str(jobs), "--target-dir", str(target_dir),
        "--message-format=json-render-diagnostics", *profile_args, *patch_args,
    ]  # fmt: skip
    units, exact = (count_units(cargo_argv, source_dir, full_env) if resolve_sources else None), False
    if units is not None:
        exact = True
    else:
        # Without the unit graph: each package compiles once, about one in ten runs a build
        # script (compiled and run), which is what TEI's graph shows.
        units = int(len(compiled) * 1.25) + 1
    env_display = {k: v for k, v in shown.items() if k != "PATH"}
    if "PATH" in shown:
        env_display["PATH"] = f"{Path(shown['PATH'].split(os.pathsep)[0])}:$PATH"
    mirrors = dict(upstream.mirrors.mapping)
    if mirrors:
        env_display["GIT_CONFIG_*"] = "url.<mirror>.insteadOf for " + ", ".join(sorted(mirrors))
    device = device_for(features, profile.compute_cap)
    return BuildPlan(
        profile=profile,
        reason=reason,
        transport=transport,
        device=device,
        default_dtype=default_dtype_for(features, device),
        features=features,
        mode=request.mode,
        cargo_profile=cargo_profile,
        jobs=jobs,
        jobs_reason=jobs_reason,
        upstream={
            "url": upstream.fork.upstream_url,
            "tag": upstream.fork.tag,
            "commit": upstream.fork.commit,
            "fetched_from": fetched_from,
        },
        fork_commit=fork_commit,
        patches=[{"name": p.name, "sha256": p.sha256} for p in upstream.fork.patches],
        crates=[{"name": c.name, "dest": c.dest, "sha256": c.content_sha256()} for c in upstream.fork.crates],
        toolchain={"rustc": rust.rustc_version_line, "note": rust.note, "pinned": str(pinned or "")},
        tools=tools,
        native_libs=native_libs,
        env=env_display,
        cargo_argv=cargo_argv,
        source_dir=str(source_dir),
        target_dir=str(target_dir),
        install_dir=install_dir,
        install_name=install_name,
        artifact="engine" if request.engine else "router",
        natives=tuple(natives),
        sources=list(sources.values()),
        warnings=warnings,
        needed=cuda.needed if cuda is not None else [],
        full_env=full_env,
        compiled_packages=len(compiled),
        units=units,
        units_exact=exact,
    )


def _cudarc_check(
    tree_argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    sources: dict[str, ProvidedSource],
    nvcc: str,
    nvcc_version: str,
) -> str:
    """What the build's cudarc takes its CUDA version from; refuses a toolkit only when cudarc
    would read the toolkit's version and reject it (an explicit cuda-NNNNN feature wins)."""
    argv = ["features" if a == "normal,build" else "{p} {f}" if a == "{p}" else a for a in tree_argv]
    argv += ["-i", "cudarc"]
    try:
        found = run(argv, cwd=cwd, env=env, stream=False).stdout.splitlines()
    except CommandFailedError:
        found = []
    first = next((line for line in found if line.strip().startswith("cudarc ")), "")
    explicit = cudarc_version_source(first)
    if explicit is not None:
        return (
            f"bindings for CUDA {explicit[0]} (feature {explicit[1]}); the toolkit's version is not consulted"
        )
    check_cudarc_accepts(sources, nvcc, nvcc_version)
    return f"reads the toolkit's version (CUDA {nvcc_version}), which it supports"


def count_units(cargo_argv: list[str], cwd: Path, env: Mapping[str, str]) -> int | None:
    """How many units (compilations and build-script runs) ``cargo_argv`` will run, from cargo's
    unit graph.  ``--unit-graph`` is unstable: stable cargo gives it with RUSTC_BOOTSTRAP=1,
    set for this one query only (the build itself runs without).  None if cargo refuses."""
    argv = [arg for arg in cargo_argv if not arg.startswith("--message-format")]
    result = run([*argv, "--unit-graph", "-Z", "unstable-options"], cwd=cwd, env={**env, "RUSTC_BOOTSTRAP": "1"},
                 check=False, stream=False)  # fmt: skip
    if result.returncode != 0:
        return None
    try:
        units = json.loads(result.stdout)["units"]
    except (ValueError, KeyError, TypeError):
        return None
    return len(units) if isinstance(units, list) else None


def _prepare_tree(upstream: Upstream, source_dir: Path, commit: str) -> None:
    """The build's own work tree at ``commit``; only changed files are touched (incremental)."""
    with upstream.cache.lock("fork"):
        git = upstream.git.with_work_tree(source_dir)
        if (source_dir / ".git").is_file() and git.ok("rev-parse", "HEAD"):
            # Cargo.lock is rewritten by every build (path patches); reset it with the rest.
            git.run("checkout", "--detach", "--force", "--quiet", commit)
            return
        if source_dir.exists():
            shutil.rmtree(source_dir)
        upstream.git.run("worktree", "prune", check=False)
        source_dir.parent.mkdir(parents=True, exist_ok=True)
        upstream.git.run("worktree", "add", "--detach", "--quiet", str(source_dir), commit)


def plan_summary(plan: BuildPlan) -> str:
    return json.dumps(plan.to_json(), indent=2)
