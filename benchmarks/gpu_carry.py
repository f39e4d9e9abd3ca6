"""Pack a router and a model for a GPU machine that has no cargo and no network, and unpack them
there into a pytei home (benchmarks/bench_gpu.py then serves them as any user would).

At most 64 MiB may travel to such a machine per call, so both are packed tightly:

- the router with xz's x86 branch filter (-9e): 62.6 MB -> 23.4 MB for a cuda-hopper router
  with two flash-attention head dims, against 23.7 MB with plain xz;
- the model's floats as float16, their bytes split into planes (all high bytes, then all low
  bytes) before xz: the high bytes (sign, exponent) are very repetitive, the low ones are noise,
  and apart they compress better (all-MiniLM-L6-v2: 45.4 MB of float16 -> 38.7 MB, against
  40.9 MB unsplit).  TEI computes in float16 on CUDA anyway; the reference is computed from the
  same float16 weights, so nothing is lost for the checks.

    python benchmarks/gpu_carry.py pack --profile cuda-hopper --model all-MiniLM-L6-v2 --out .gpu
    python benchmarks/gpu_carry.py unpack .gpu --home /tmp/pytei-home        # on the GPU machine
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROUTER_FILTERS = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
MODEL_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
WEIGHTS = "model.safetensors"
# What pytei needs on the GPU machine beyond what its image already holds (KINDS.md's list).
WHEELS = ("platformdirs", "httptools", "hdrhistogram")


def _installed_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _split_planes(raw: bytes) -> bytes:
    """safetensors with float16 payload -> header + high-byte plane + low-byte plane."""
    header_len = int.from_bytes(raw[:8], "little")
    body = np.frombuffer(raw, dtype=np.uint8, offset=8 + header_len)
    if body.size % 2:
        raise SystemExit("the float16 payload has an odd number of bytes; is it float16 throughout?")
    return raw[: 8 + header_len] + body.reshape(-1, 2).T.tobytes()


def _join_planes(packed: bytes) -> bytes:
    header_len = int.from_bytes(packed[:8], "little")
    body = np.frombuffer(packed, dtype=np.uint8, offset=8 + header_len)
    return packed[: 8 + header_len] + body.reshape(2, -1).T.tobytes()


def _float16_weights(path: Path) -> bytes:
    from safetensors.numpy import load_file, save

    tensors = load_file(str(path))
    converted = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in tensors.items()}
    if any(v.dtype != np.float16 for v in converted.values()):
        # planes need one element size throughout; int tensors (position ids) are not weights
        converted = {k: v for k, v in converted.items() if v.dtype == np.float16}
    return bytes(save(converted, metadata={"format": "pt"}))


def _pack_engine(cache: object, name: str, out: Path) -> None:
    """The engine build ``name``: its manifest, and its wheel's files as one xz tar (the x86
    filter shrinks the extension far more than the wheel's deflate)."""
    directory = cache.root / "engines" / name  # type: ignore[attr-defined]
    (out / "engine").mkdir()
    shutil.copyfile(directory / "manifest.json", out / "engine" / "manifest.json")
    (out / "engine" / "name").write_text(name, encoding="utf-8")
    (wheel,) = sorted(directory.glob("*.whl"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(wheel) as archive, tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in archive.infolist():
            data = archive.read(member)
            info = tarfile.TarInfo(member.filename)
            info.size, info.mode = len(data), (member.external_attr >> 16) or 0o644
            tar.addfile(info, io.BytesIO(data))
    (out / "engine" / "site.tar.xz").write_bytes(lzma.compress(buffer.getvalue(), filters=ROUTER_FILTERS))


def _unpack_engine(source: Path, home: Path, site: Path) -> None:
    name = (source / "engine" / "name").read_text(encoding="utf-8").strip()
    target = home / "engines" / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "engine" / "manifest.json", target / "manifest.json")
    site.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress((source / "engine" / "site.tar.xz").read_bytes()))) as tar:
        tar.extractall(site, filter="data")
    print(f"unpacked engine {name} into {site}")


def pack(
    profile: str,
    models: list[str],
    out: Path,
    *,
    wheels: bool,
    weights: bool,
    engine: str | None = None,
    lee: bool = False,
    strip: bool = False,
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pytei.build.installs import find_router
    from pytei.cache import Cache
    from pytei.config import load_settings
    from pytei.models.resolve import packaged_model_dir

    cache = Cache.from_settings(load_settings())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    router = find_router(cache, profile)
    if engine:
        _pack_engine(cache, engine, out)
    (out / "router").mkdir()
    shutil.copyfile(router.binary.parent / "manifest.json", out / "router" / "manifest.json")
    (out / "router" / "name").write_text(profile, encoding="utf-8")
    binary = router.binary.read_bytes()
    if strip:  # a --fast router keeps its symbols: ~18% of it, which the 64 MiB limit may need
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "router"
            copy.write_bytes(binary)
            subprocess.run(["strip", str(copy)], check=True)
            binary = copy.read_bytes()
        manifest = json.loads((out / "router" / "manifest.json").read_text(encoding="utf-8"))
        manifest["carried"] = {"stripped": True, "bytes": len(binary)}  # its binary sha256 is the unstripped one
        (out / "router" / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    with lzma.open(
        out / "router" / "text-embeddings-router.xz", "wb", format=lzma.FORMAT_XZ, filters=ROUTER_FILTERS
    ) as f:
        f.write(binary)
    for name in models:
        source = packaged_model_dir(name, cache)
        target = out / "models" / name
        target.mkdir(parents=True)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(source.rglob("*")):
                if (
                    path.is_file()
                    and path.name != WEIGHTS
                    and path.name not in ("LICENSE", "data_config.json")
                ):
                    tar.add(path, arcname=str(path.relative_to(source)))
        (target / "files.tar.xz").write_bytes(lzma.compress(buffer.getvalue(), filters=MODEL_FILTERS))
        if weights:
            planes = _split_planes(_float16_weights(source / WEIGHTS))
            (target / "weights.f16planes.xz").write_bytes(lzma.compress(planes, filters=MODEL_FILTERS))
    if lee:  # the Lee corpus (33 kB) for the matrix's accuracy column: no gensim wheel there
        from pytei.bench.quality import lee_set

        lee_set(cache)
        shutil.copytree(cache.root / "datasets" / "lee", out / "datasets" / "lee")
    if wheels:
        pins = [f"{name}=={_installed_version(name)}" for name in WHEELS]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
             "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(out / "wheels"), *pins],
            check=True,
        )  # fmt: skip
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"{path.stat().st_size / 1e6:8.2f} MB  {path.relative_to(out)}")
    print(f"{total / 2**20:8.2f} MiB  in all (64 MiB travel per call, the repository included)")


def unpack(source: Path, home: Path, site: Path = Path("/tmp/site")) -> None:
    if (source / "engine").is_dir():
        _unpack_engine(source, home, site)
    name = (source / "router" / "name").read_text(encoding="utf-8").strip()
    router_dir = home / "routers" / name
    router_dir.mkdir(parents=True, exist_ok=True)
    binary = router_dir / "text-embeddings-router"
    with lzma.open(source / "router" / "text-embeddings-router.xz") as f:
        binary.write_bytes(f.read())
    binary.chmod(0o755)
    manifest = json.loads((source / "router" / "manifest.json").read_text(encoding="utf-8"))
    manifest["binary"]["path"] = str(binary)  # where it lies on this machine
    (router_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    for model in sorted((source / "models").iterdir()) if (source / "models").is_dir() else []:
        target = home / "models" / model.name
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress((model / "files.tar.xz").read_bytes()))) as tar:
            tar.extractall(target, filter="data")
        planes = model / "weights.f16planes.xz"
        if planes.is_file():
            (target / WEIGHTS).write_bytes(_join_planes(lzma.decompress(planes.read_bytes())))
    if (source / "datasets").is_dir():
        shutil.copytree(source / "datasets", home / "datasets", dirs_exist_ok=True)
    print(f"unpacked router {name} and {len(list((home / 'models').glob('*')))} model(s) into {home}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--profile", default="cuda-hopper", help="the installed router to pack")
    p.add_argument("--model", action="append", default=[], help="catalogue model (repeatable)")
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p.add_argument("--no-wheels", action="store_true")
    p.add_argument("--no-weights", action="store_true", help="config and tokenizer only (for random models)")
    p.add_argument("--engine", help="an engine build (`pytei build --engine`) to carry too, by install name")
    p.add_argument("--lee", action="store_true", help="carry the Lee corpus (the matrix's accuracy check)")
    p.add_argument("--strip", action="store_true", help="strip the router's symbols (a --fast build keeps them)")
    u = sub.add_parser("unpack")
    u.add_argument("source", type=Path)
    u.add_argument("--home", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.profile, args.model, args.out, wheels=not args.no_wheels, weights=not args.no_weights,
             engine=args.engine, lee=args.lee, strip=args.strip)  # fmt: skip
    else:
        unpack(args.source, args.home)


if __name__ == "__main__":
    main()
