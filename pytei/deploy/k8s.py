"""``pytei deploy k8s``: a kustomize base from a :class:`DeployPlan`, one Deployment per
service of pytei.yaml (replicas behind a Service, one GPU per pod for CUDA images).

Probes follow what TEI does (``../docs``: it binds only after load and warm-up, and ``/health``
queues behind in-flight batches): a ``startupProbe`` long enough for load plus warm-up, a
readiness probe on ``/health``, and a lenient liveness probe so a saturated pod is not killed.
The pod runs as pytei's unprivileged user on a read-only root with ``/tmp`` and ``/dev/shm``
as volumes; the API key comes from a Secret by reference; the HorizontalPodAutoscaler scales on
TEI's ``te_queue_size`` (through prometheus-adapter)."""

from __future__ import annotations

import math
from typing import Any

import yaml

from pytei._secrets import API_KEY_ENV
from pytei.deploy.plan import DeployPlan, ServicePlan

__all__ = ["render_kustomize"]

_UID = 10001
_STARTUP_PERIOD = 5


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "pytei", "app.kubernetes.io/instance": name}


def _probe(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _deployment(plan: DeployPlan, service: ServicePlan, secret: str, model_claim: str) -> dict[str, Any]:
    cuda = plan.image.device == "cuda"
    startup = max(plan.image.startup_seconds, int(plan.ready_timeout))
    container: dict[str, Any] = {
        "name": "router",
        "image": plan.image.tag,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-c", "/etc/pytei/pytei.yaml"],
        "ports": [{"name": "http", "containerPort": plan.image.port, "protocol": "TCP"}],
        "env": [
            {
                "name": API_KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "api-key", "optional": True}},
            }
        ],
        "startupProbe": _probe("/health", _STARTUP_PERIOD, 5, math.ceil(startup / _STARTUP_PERIOD)),
        "readinessProbe": _probe("/health", 10, 5, 3),
        "livenessProbe": _probe("/health", 20, 10, 6),
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "8Gi", **({"nvidia.com/gpu": 1} if cuda else {})},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/pytei", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{service.name}-config"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]
    if service.host_model_dir is not None:
        # the model is not in the image: a volume holding <models>/<folder> (fill it once)
        container["volumeMounts"].append({"name": "models", "mountPath": "/models", "readOnly": True})
        volumes.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": model_claim, "readOnly": True}}
        )
    replicas = len(service.gpus) if service.gpus else service.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service.name, "labels": _labels(service.name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels(service.name)},
            # a GPU node rarely has a spare GPU for a surge pod
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}
                if cuda
                else {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": _labels(service.name)},
                "spec": {
                    "terminationGracePeriodSeconds": math.ceil(plan.stop_timeout) + 15,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": _UID,
                        "runAsGroup": _UID,
                        "fsGroup": _UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service(plan: DeployPlan, service: ServicePlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service.name, "labels": _labels(service.name)},
        "spec": {
            "selector": _labels(service.name),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _configmap(service: ServicePlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{service.name}-config", "labels": _labels(service.name)},
        "data": {"pytei.yaml": service.config_yaml},
    }


def _pdb(service: ServicePlan) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": service.name, "labels": _labels(service.name)},
        # one pod at a time, never blocking a drain of a single-replica service
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(service.name)}},
    }


def _hpa(plan: DeployPlan, service: ServicePlan, max_replicas: int) -> dict[str, Any]:
    replicas = len(service.gpus) if service.gpus else service.replicas
    # queued requests per pod: a GPU drains a deep queue quickly, a CPU pod does not
    target = "15" if plan.image.device == "cuda" else "4"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": service.name, "labels": _labels(service.name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicas": replicas,
            "maxReplicas": max(max_replicas, replicas),
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "te_queue_size"},
                        "target": {"type": "AverageValue", "averageValue": target},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 180,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 50, "periodSeconds": 15},
                        {"type": "Pods", "value": 2, "periodSeconds": 15},
                    ],
                },
            },
        },
    }


def _service_monitor(service: ServicePlan) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": service.name, "labels": _labels(service.name)},
        "spec": {
            "selector": {"matchLabels": _labels(service.name)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def render_kustomize(
    plan: DeployPlan,
    *,
    secret: str = "pytei-api-key",
    model_claim: str = "pytei-models",
    max_replicas: int = 0,
    service_monitor: bool = False,
) -> dict[str, str]:
    """File name -> YAML text of the kustomize base (kustomization.yaml lists the rest)."""
    files: dict[str, list[dict[str, Any]]] = {}
    for service in plan.services:
        replicas = len(service.gpus) if service.gpus else service.replicas
        documents = [
            _configmap(service),
            _deployment(plan, service, secret, model_claim),
            _service(plan, service),
            _pdb(service),
            _hpa(plan, service, max_replicas or replicas * 4),
        ]
        if service_monitor:
            documents.append(_service_monitor(service))
        files[f"{service.name}.yaml"] = documents
    rendered = {
        name: "---\n".join(yaml.safe_dump(doc, sort_keys=False) for doc in documents)
        for name, documents in files.items()
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/managed-by": "pytei"}, "includeSelectors": False}],
        "resources": sorted(files),
    }
    rendered["kustomization.yaml"] = (
        "# Rendered by pytei deploy k8s: kubectl apply -k <this folder>\n"
        + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return rendered
