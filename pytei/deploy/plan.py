"""What a deployment runs, whatever renders it: one entry per service of ``pytei.yaml`` with
its model as the containers see it, its GPUs or replicas, and the container-side config file
that ``pytei serve -c`` reads inside (the same settings, paths rewritten for the container).

The image's labels (``pytei image build``) say which model is baked in, the device, the port
and the start-up time; a model the image does not carry must be a folder on the deploying
host (compose mounts it read-only; Kubernetes mounts a volume holding it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pytei.config import Settings
from pytei.deploy.image import MODELS_DIR, PORT, model_folder
from pytei.errors import DeployError

__all__ = ["DeployPlan", "ImageFacts", "ServicePlan", "plan_deployment"]

# serve.* settings that describe the deploying host, not the container
_HOST_ONLY = frozenset(
    {"serve.hostname", "serve.port", "serve.binary", "serve.cuda_lib_dirs", "serve.default_model"}
)


@dataclass(frozen=True)
class ImageFacts:
    """What rendering needs to know of the image (from its labels)."""

    tag: str
    device: str = "cpu"
    model_id: str = ""  # the model baked in ("" for none)
    model_path: str = ""
    startup_seconds: int = 600
    port: int = PORT

    @classmethod
    def from_labels(cls, tag: str, labels: Mapping[str, str]) -> ImageFacts:
        if "io.pytei.install-name" not in labels:
            raise DeployError(
                f"{tag} is not an image `pytei image build` made (it has no io.pytei labels)",
                hint="build one with `pytei image build`, or pass --device for an image of your own",
            )
        return cls(
            tag=tag,
            device=labels.get("io.pytei.device", "cpu"),
            model_id=labels.get("io.pytei.model", ""),
            model_path=labels.get("io.pytei.model-path", ""),
            startup_seconds=int(labels.get("io.pytei.startup-seconds", "600") or 600),
            port=int(labels.get("io.pytei.port", str(PORT)) or PORT),
        )


@dataclass(frozen=True)
class ServicePlan:
    name: str
    model_id: str  # as the config names it
    container_model: str  # the path inside the container
    host_model_dir: Path | None  # a folder to mount (None: baked into the image)
    gpus: tuple[str, ...]
    replicas: int
    host_port: int
    config_yaml: str  # /etc/pytei/pytei.yaml inside this service's containers

    @property
    def instances(self) -> list[tuple[str, str | None]]:
        """(container name suffix, GPU or None): one per GPU, else one per replica."""
        if self.gpus:
            return [(f"gpu{gpu}", gpu) for gpu in self.gpus]
        return [(str(index + 1), None) for index in range(self.replicas)]


@dataclass(frozen=True)
class DeployPlan:
    image: ImageFacts
    services: tuple[ServicePlan, ...]
    stop_timeout: float
    ready_timeout: float
    extra: Mapping[str, Any] = field(default_factory=dict)


def _serve_settings(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, setting in settings.values.items():
        if key.startswith("serve.") and key not in _HOST_ONLY and setting.source != "default":
            values[key.removeprefix("serve.")] = setting.value
    return values


def _entries(settings: Settings, image: ImageFacts) -> list[Mapping[str, Any]]:
    if settings.services:
        return list(settings.services)
    if not image.model_id:
        raise DeployError(
            f"the config lists no services and {image.tag} has no model baked in",
            hint="add services: to pytei.yaml, or build the image with --model-id",
        )
    return [{"name": model_folder(image.model_id), "model_id": image.model_id}]


def _model_for(
    entry: Mapping[str, Any], image: ImageFacts, config_dir: Path, where: str
) -> tuple[str, Path | None]:
    model_id = str(entry.get("model_id") or image.model_id)
    if not model_id:
        raise DeployError(f"{where} names no model_id and the image has none baked in")
    # the same model however it is named (all-MiniLM-L6-v2, sentence-transformers/all-MiniLM-L6-v2)
    if image.model_id and model_folder(model_id) == model_folder(image.model_id):
        return image.model_path, None
    path = Path(model_id).expanduser()
    if not path.is_absolute():
        path = (config_dir / path).resolve()
    if path.is_dir() and (path / "config.json").is_file():
        return f"{MODELS_DIR}/{model_folder(model_id)}", path
    raise DeployError(
        f"{where}: model {model_id!r} is not baked into {image.tag} and is not a model folder here",
        hint=f"bake it (`pytei image build --model-id {model_id}`) or give a local model directory",
    )


def _int(value: object, what: str, minimum: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise DeployError(f"{what} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise DeployError(f"{what} must be at least {minimum}, not {number}")
    return number


def plan_deployment(
    settings: Settings, image: ImageFacts, *, replicas: int = 1, base_port: int | None = None
) -> DeployPlan:
    """The services to deploy from ``settings`` (a loaded pytei.yaml) on ``image``."""
    replicas = _int(replicas, "--replicas", 1)
    config_dir = settings.config_file.parent if settings.config_file else Path.cwd()
    port = base_port if base_port is not None else _int(settings.get_str("serve.port"), "serve.port", 1)
    serve = _serve_settings(settings)
    planned: list[ServicePlan] = []
    seen: set[str] = set()
    for index, entry in enumerate(_entries(settings, image)):
        where = f"services[{index}]"
        name = str(entry.get("name") or model_folder(str(entry.get("model_id") or image.model_id)))
        name = name.lower().replace("_", "-").replace(".", "-")
        if name in seen:
            raise DeployError(
                f"{where}: two services are named {name!r}", hint="give each service its own name"
            )
        seen.add(name)
        container_model, host_dir = _model_for(entry, image, config_dir, where)
        gpus = entry.get("gpus") or ()
        gpu_list = tuple(str(g).strip() for g in (gpus.split(",") if isinstance(gpus, str) else gpus))
        if gpu_list and image.device != "cuda":
            raise DeployError(f"{where} lists GPUs but {image.tag} serves on {image.device}")
        if gpu_list and replicas > 1:
            raise DeployError(
                f"{where} lists GPUs and --replicas is {replicas}", hint="one router per GPU: drop --replicas"
            )
        inner: dict[str, Any] = {"name": name, "model_id": container_model, "port": image.port}
        for key in ("pooling", "router_args", "env"):
            if entry.get(key):
                inner[key] = entry[key]
        config = {"serve": {**serve, "hostname": "0.0.0.0", "port": str(image.port)}, "services": [inner]}
        own_port = entry.get("port")
        planned.append(
            ServicePlan(
                name=name,
                model_id=str(entry.get("model_id") or image.model_id),
                container_model=container_model,
                host_model_dir=host_dir,
                gpus=gpu_list,
                replicas=1 if gpu_list else replicas,
                host_port=_int(own_port, f"{where}.port", 1) if own_port else port + index,
                config_yaml="# pytei serve -c inside the container (rendered by pytei deploy)\n"
                + yaml.safe_dump(config, sort_keys=False),
            )
        )
    return DeployPlan(
        image=image,
        services=tuple(planned),
        stop_timeout=settings.get_float("serve.stop_timeout"),
        ready_timeout=settings.get_float("serve.ready_timeout"),
    )
