"""``pytei image base|build`` and ``pytei deploy compose|k8s``: images through the Docker SDK,
deployments rendered from pytei.yaml."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pytei.cache import Cache
from pytei.cli._app import AppContext, emit_json, pass_app
from pytei.errors import DeployError

if TYPE_CHECKING:
    from pytei.deploy.plan import ImageFacts

__all__ = ["COMMANDS"]


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


@click.group("image")
def image_group() -> None:
    """Container images: a Debian base made here, and runtime images of a built router."""


@image_group.command("base")
@click.option("--tag", help="Image tag [default: deploy.base_image].")
@click.option("--suite", help="Debian suite [default: the oldest whose glibc runs what this machine builds].")
@click.option("--mirror", help="Debian mirror [default: deploy.debian_mirror].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def base(app: AppContext, tag: str | None, suite: str | None, mirror: str | None, as_json: bool) -> None:
    """Make the base image from Debian's packages (debootstrap, then docker import): no
    registry needed.  Needs root; the packages are cached, so a second run needs no network."""
    from pytei.deploy.base import build_base_image, host_glibc, suite_for_glibc, suite_named  # noqa: PLC0415
    from pytei.deploy.docker_api import connect  # noqa: PLC0415

    settings = app.settings()
    chosen = suite_named(suite) if suite else suite_for_glibc(host_glibc())
    client = connect()
    result = build_base_image(
        client,
        Cache.from_settings(settings),
        tag=tag or settings.get_str("deploy.base_image"),
        suite=chosen,
        mirror=mirror or settings.get_str("deploy.debian_mirror"),
        on_line=lambda line: app.err.print(f"[dim]{line}[/dim]", highlight=False),
    )
    if as_json:
        emit_json(vars(result))
        return
    app.err.print(f"[green]✓[/green] {result.tag}: Debian {result.suite} ({result.arch}), "
                  f"{_mb(result.size_bytes)}, {result.seconds:.0f} s")  # fmt: skip
    click.echo(result.tag)


@image_group.command("build")
@click.option("--profile", help="The router `pytei build` installed for this profile [default: the newest].")
@click.option("--model-id", help="Bake this model in (catalogue name, hub id or folder).")
@click.option("--no-model", is_flag=True, help="Bake no model: mount one when deploying.")
@click.option("--base", "base_image", help="Base image [default: deploy.base_image, see `pytei image base`].")
@click.option("--tag", help="Image tag [default: pytei/<profile>[-<model>]:<version>].")
@click.option("--startup-seconds", type=click.IntRange(min=10), default=600, show_default=True,
              help="HEALTHCHECK start period: model load plus warm-up.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def build(
    app: AppContext,
    profile: str | None,
    model_id: str | None,
    no_model: bool,
    base_image: str | None,
    tag: str | None,
    startup_seconds: int,
    as_json: bool,
) -> None:
    """Build a runtime image: the router and its runtime libraries, pytei, and the model."""
    from pytei.build.installs import find_router  # noqa: PLC0415
    from pytei.deploy.docker_api import connect  # noqa: PLC0415
    from pytei.deploy.image import ImageSpec, build_image, default_tag  # noqa: PLC0415
    from pytei.models.resolve import resolve_model  # noqa: PLC0415

    if no_model and model_id:
        raise DeployError("--model-id and --no-model contradict each other", hint="give one of them")
    settings = app.settings()
    cache = Cache.from_settings(settings)
    router = find_router(cache, profile)
    client = connect()  # before any model download: no engine, no work
    chosen = None if no_model else (model_id or settings.get_str("serve.default_model"))
    model_dir = None
    if chosen:
        model = resolve_model(chosen, cache, progress=sys.stderr.isatty())
        model_dir = model.path
        if "ort" in router.manifest.features and settings.get_bool("serve.onnx_export"):
            from pytei.models.for_ort import onnx_for_ort  # noqa: PLC0415 (imports onnx)

            model_dir = onnx_for_ort(model, cache, pooling=model.default_pooling).directory
    spec = ImageSpec(
        router=router,
        base=base_image or settings.get_str("deploy.base_image"),
        tag=tag or default_tag(router, chosen),
        model_id=chosen,
        model_dir=model_dir,
        startup_seconds=startup_seconds,
    )
    result = build_image(
        client, cache, spec, on_line=lambda line: app.err.print(f"[dim]{line}[/dim]", highlight=False)
    )
    if as_json:
        emit_json({"tag": result.tag, "id": result.image_id, "size_bytes": result.size_bytes,
                   "seconds": round(result.seconds, 1), "labels": dict(result.labels)})  # fmt: skip
        return
    app.err.print(f"[green]✓[/green] {result.tag}: {router.profile} router"
                  + (f", {chosen}" if chosen else "") + f", {_mb(result.size_bytes)}, {result.seconds:.0f} s")  # fmt: skip
    click.echo(result.tag)


def _facts(image: str, device: str | None) -> ImageFacts:
    from pytei.deploy.docker_api import connect, image_labels  # noqa: PLC0415
    from pytei.deploy.plan import ImageFacts  # noqa: PLC0415

    if device is not None:  # an image of one's own, or no engine here
        return ImageFacts(tag=image, device=device)
    return ImageFacts.from_labels(image, image_labels(connect(), image))


@click.group("deploy")
def deploy_group() -> None:
    """Render deployments of a runtime image from pytei.yaml (its `services:`)."""


_image_option = click.option("--image", required=True, help="A runtime image (`pytei image build`).")
_device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda"]),
    help="The image's device, for an image this Docker Engine does not have [default: its labels].",
)  # fmt: skip
_out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write (new or pytei's).",
)


_config_option = click.option(
    "-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
    help="pytei.yaml whose services to deploy [default: ./pytei.yaml].",
)  # fmt: skip


@deploy_group.command("compose")
@_image_option
@_device_option
@_out_option
@_config_option
@click.option(
    "--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Routers per CPU service."
)
@click.option("--project", default="pytei", show_default=True, help="Compose project name.")
@click.option(
    "--no-cpu-pinning", is_flag=True, help="Let CPU replicas share all cores [default: each its own]."
)
@pass_app
def compose(
    app: AppContext,
    image: str,
    device: str | None,
    out: Path,
    config_file: Path | None,
    replicas: int,
    project: str,
    no_cpu_pinning: bool,
) -> None:
    """A compose project: one router per GPU or --replicas per service, nginx in front (one
    port per service), health-gated.  `docker compose up -d` in --out starts it."""
    from pytei.deploy.compose import write_compose_project  # noqa: PLC0415
    from pytei.deploy.plan import plan_deployment  # noqa: PLC0415

    app.use_config(config_file)
    facts = _facts(image, device)
    plan = plan_deployment(app.settings(), facts, replicas=replicas)
    from pytei.build.toolchain import cpu_cores  # noqa: PLC0415

    for path in write_compose_project(plan, out, project, None if no_cpu_pinning else cpu_cores()):
        click.echo(str(path))


@deploy_group.command("k8s")
@_image_option
@_device_option
@_out_option
@_config_option
@click.option(
    "--replicas", type=click.IntRange(min=1), default=2, show_default=True, help="Pods per CPU service."
)
@click.option("--max-replicas", type=click.IntRange(min=1), help="HPA ceiling [default: 4 x replicas].")
@click.option(
    "--secret", default="pytei-api-key", show_default=True, help="Secret holding the API key (key 'api-key')."
)
@click.option("--model-claim", default="pytei-models", show_default=True,
              help="PVC with models the image does not carry (mounted at /models).")  # fmt: skip
@click.option("--service-monitor", is_flag=True, help="Add a Prometheus Operator ServiceMonitor.")
@pass_app
def k8s(
    app: AppContext,
    image: str,
    device: str | None,
    out: Path,
    config_file: Path | None,
    replicas: int,
    max_replicas: int | None,
    secret: str,
    model_claim: str,
    service_monitor: bool,
) -> None:
    """A kustomize base: per service a Deployment, Service, ConfigMap, PodDisruptionBudget and
    HorizontalPodAutoscaler (`kubectl apply -k --out`)."""
    from pytei.deploy.compose import MARKER  # noqa: PLC0415
    from pytei.deploy.k8s import render_kustomize  # noqa: PLC0415
    from pytei.deploy.plan import plan_deployment  # noqa: PLC0415

    app.use_config(config_file)
    facts = _facts(image, device)
    plan = plan_deployment(app.settings(), facts, replicas=replicas)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DeployError(
            f"{out} is not empty and was not rendered by pytei deploy", hint="give a new or empty --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    files = render_kustomize(
        plan,
        secret=secret,
        model_claim=model_claim,
        max_replicas=max_replicas or 0,
        service_monitor=service_monitor,
    )
    for name, text in files.items():
        (out / name).write_text(text)
        click.echo(str(out / name))
    (out / MARKER).write_text("rendered by pytei deploy\n")


COMMANDS = [image_group, deploy_group]
