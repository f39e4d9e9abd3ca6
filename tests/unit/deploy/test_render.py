"""pytei deploy: compose projects, nginx and Kubernetes bases rendered from pytei.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pytei.config import load_settings
from pytei.deploy.compose import nginx_conf, render_compose, write_compose_project
from pytei.deploy.k8s import render_kustomize
from pytei.deploy.plan import DeployPlan, ImageFacts, plan_deployment
from pytei.errors import DeployError

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
EXAMPLE = DEPLOY / "examples" / "pytei.yaml"
KEY = "s3cr3t'\"$(rm -rf /)`;|&*.+?[]{}\\"  # shell and regex metacharacters
CPU = ImageFacts(
    tag="pytei/ort-all-minilm-l6-v2:0.1.0", device="cpu", model_id="sentence-transformers/all-MiniLM-L6-v2",
    model_path="/models/all-minilm-l6-v2", startup_seconds=120,
)  # fmt: skip
CUDA = ImageFacts(tag="pytei/cuda-hopper:0.1.0", device="cuda", model_id="all-MiniLM-L6-v2",
                  model_path="/models/all-minilm-l6-v2")  # fmt: skip


def example_plan(image: ImageFacts = CPU, replicas: int = 2) -> DeployPlan:
    return plan_deployment(load_settings(config_file=EXAMPLE, env={}), image, replicas=replicas)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_the_example_config_loads_and_plans_one_service_from_the_baked_model() -> None:
    plan = example_plan()
    (service,) = plan.services
    assert (service.name, service.container_model, service.host_model_dir) == ("embed", "/models/all-minilm-l6-v2", None)
    inner = yaml.safe_load(service.config_yaml)
    # what `pytei serve -c` reads inside: the container's port and address, the rest as written
    assert inner["serve"] == {"ready_timeout": 900.0, "stop_timeout": 20.0, "hostname": "0.0.0.0", "port": "8080"}
    assert inner["services"] == [
        {"name": "embed", "model_id": "/models/all-minilm-l6-v2", "port": 8080, "pooling": "mean",
         "router_args": ["--max-client-batch-size", "64"]}
    ]  # fmt: skip


def test_compose_has_replicas_behind_a_health_gated_balancer_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEI_API_KEY", KEY)
    plan = example_plan()
    files = write_compose_project(plan, tmp_path / "out", "demo")
    for path in files:
        assert KEY not in path.read_text()
    project = yaml.safe_load((tmp_path / "out" / "compose.yaml").read_text())
    services = project["services"]
    assert set(services) == {"embed-1", "embed-2", "balancer"}
    router = services["embed-1"]
    assert router["environment"] == ["PYTEI_API_KEY"]  # passed through by name only
    assert router["command"] == ["-c", "/etc/pytei/pytei.yaml"]
    assert router["read_only"] is True and router["user"] == "10001:10001"
    assert router["stop_grace_period"] == "30s"  # serve.stop_timeout 20 + 10
    assert router["healthcheck"]["test"][-1] == "/opt/pytei/healthcheck.py"
    assert "ports" not in router  # only the balancer is published
    balancer = services["balancer"]
    assert balancer["ports"] == ["8080:8080"]
    assert balancer["depends_on"] == {n: {"condition": "service_healthy"} for n in ("embed-1", "embed-2")}
    assert (tmp_path / "out" / ".env").read_text() == "COMPOSE_PROJECT_NAME=demo\n"


def test_nginx_balances_and_replays_on_the_other_replica() -> None:
    conf = nginx_conf(example_plan())
    assert "server embed-1:8080 max_fails=1 fail_timeout=5s;" in conf
    assert "server embed-2:8080 max_fails=1 fail_timeout=5s;" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in conf
    assert "listen 8080;" in conf and "pid /tmp/nginx.pid;" in conf  # unprivileged, read-only root


def test_gpus_give_one_router_per_gpu_with_a_device_reservation(tmp_path: Path) -> None:
    config = tmp_path / "pytei.yaml"
    config.write_text("services:\n  - name: embed\n    model_id: all-MiniLM-L6-v2\n    gpus: [0, 1]\n")
    plan = plan_deployment(load_settings(config_file=config, env={}), CUDA)
    services = render_compose(plan)["services"]
    assert set(services) == {"embed-gpu0", "embed-gpu1", "balancer"}
    devices = services["embed-gpu1"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}]


@pytest.mark.parametrize(
    ("text", "image", "replicas", "message"),
    [
        ("services:\n  - model_id: /nowhere/model\n", CPU, 1, "is not baked into"),
        ("services:\n  - model_id: all-MiniLM-L6-v2\n    gpus: [0]\n", CPU, 1, "lists GPUs but"),
        ("services:\n  - model_id: all-MiniLM-L6-v2\n    gpus: [0]\n", CUDA, 2, "lists GPUs and --replicas"),
        ("services:\n  - {name: a_b, model_id: all-MiniLM-L6-v2}\n  - {name: a-b, model_id: all-MiniLM-L6-v2}\n",
         CPU, 1, "two services are named"),
        ("serve:\n  port: 8080\n", ImageFacts(tag="x"), 1, "has no model baked in"),
    ],
)  # fmt: skip
def test_a_deployment_that_cannot_work_is_refused_with_the_fix(
    tmp_path: Path, text: str, image: ImageFacts, replicas: int, message: str
) -> None:
    config = tmp_path / "pytei.yaml"
    config.write_text(text)
    with pytest.raises(DeployError, match=message) as raised:
        plan_deployment(load_settings(config_file=config, env={}), image, replicas=replicas)
    assert raised.value.exit_code == 29


def test_a_local_model_folder_is_mounted_read_only(tmp_path: Path) -> None:
    model = tmp_path / "models" / "My_Model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    config = tmp_path / "pytei.yaml"
    config.write_text("services:\n  - name: mine\n    model_id: ./models/My_Model\n")
    plan = plan_deployment(load_settings(config_file=config, env={}), CPU)
    router = render_compose(plan)["services"]["mine-1"]
    assert f"{model}:/models/my_model:ro" in router["volumes"]


def test_an_output_folder_that_is_not_pytei_s_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(DeployError, match="not rendered by pytei"):
        write_compose_project(example_plan(), tmp_path, "demo")
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


# --- Kubernetes -------------------------------------------------------------------------------


def rendered(image: ImageFacts = CPU, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
    files = render_kustomize(example_plan(image), **kwargs)
    return {name: documents(text) for name, text in files.items()}


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_every_kubernetes_manifest_passes_the_schema() -> None:
    files = rendered(service_monitor=True)
    assert files["kustomization.yaml"][0]["resources"] == ["embed.yaml"]
    checked = 0
    for doc in files["embed.yaml"]:
        if doc["kind"] == "ServiceMonitor":  # a CRD: no schema offline, its shape is checked below
            assert doc["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)
        checked += 1
    assert checked == 5


def test_probes_grace_and_security_follow_the_config() -> None:
    kinds = by_kind(rendered()["embed.yaml"])
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    startup = container["startupProbe"]
    # load plus warm-up fit: serve.ready_timeout 900 s
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    liveness = container["livenessProbe"]
    assert liveness["failureThreshold"] >= 6 and liveness["timeoutSeconds"] >= 5  # /health queues behind batches
    assert pod["terminationGracePeriodSeconds"] > 20
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/pytei", "/tmp", "/dev/shm"}
    assert container["env"] == [
        {"name": "PYTEI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "pytei-api-key", "key": "api-key", "optional": True}}}
    ]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert kinds["Deployment"]["spec"]["replicas"] == 2
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "te_queue_size"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert yaml.safe_load(kinds["ConfigMap"]["data"]["pytei.yaml"])["services"][0]["model_id"] == "/models/all-minilm-l6-v2"


def test_cuda_pods_ask_for_one_gpu_each_and_do_not_surge() -> None:
    deployment = by_kind(rendered(CUDA)["embed.yaml"])["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_no_secret_reaches_the_kubernetes_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEI_API_KEY", KEY)
    for text in render_kustomize(example_plan()).values():
        assert KEY not in text


def test_cpu_replicas_on_one_host_get_their_own_cores() -> None:
    from pytei.deploy.compose import cpu_sets

    services = render_compose(example_plan(replicas=2), cores=[0, 1, 2, 3])["services"]
    assert (services["embed-1"]["cpuset"], services["embed-2"]["cpuset"]) == ("0,1", "2,3")
    assert "cpuset" not in services["balancer"]
    assert cpu_sets(3, [0, 1]) is None  # more routers than cores: no pinning (they would starve)
    assert "cpuset" not in render_compose(example_plan(replicas=1), cores=[0, 1])["services"]["embed-1"]
