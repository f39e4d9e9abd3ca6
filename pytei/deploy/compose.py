"""``pytei deploy compose``: a compose project from a :class:`DeployPlan`: one router container
per GPU (a device reservation each) or per CPU replica, and nginx in front of each service so
clients see one endpoint.

nginx (from the base image, run as the same unprivileged user) balances to the replicas with
the fewest requests in flight, takes a replica out for a few seconds when it refuses or fails
(passive health), and replays a request the failed replica never answered on another one:
embedding requests change nothing, so replaying a POST is safe.  It starts only once every
replica's HEALTHCHECK passes.  The API key is passed through from the environment of
``docker compose up`` by name; its value is never written into the project.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from pytei._secrets import API_KEY_ENV
from pytei.deploy.plan import DeployPlan, ServicePlan
from pytei.errors import DeployError

__all__ = ["MARKER", "nginx_conf", "render_compose", "write_compose_project"]

MARKER = ".pytei-deploy"  # a rendered folder holds this; pytei only rewrites such folders
_UID = "10001:10001"


def _healthcheck(plan: DeployPlan) -> dict[str, Any]:
    return {
        "test": ["CMD", "python3", "/opt/pytei/healthcheck.py"],
        "interval": "5s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{max(10, plan.image.startup_seconds)}s",
    }


def _router(plan: DeployPlan, service: ServicePlan, suffix: str, gpu: str | None) -> dict[str, Any]:
    volumes = [f"./config/{service.name}.yaml:/etc/pytei/pytei.yaml:ro"]
    if service.host_model_dir is not None:
        volumes.append(f"{service.host_model_dir}:{service.container_model}:ro")
    container: dict[str, Any] = {
        "image": plan.image.tag,
        "command": ["-c", "/etc/pytei/pytei.yaml"],
        "environment": [API_KEY_ENV],  # passed through by name from `docker compose up`'s env
        "volumes": volumes,
        "read_only": True,
        "tmpfs": ["/tmp:exec,mode=1777"],
        "shm_size": "1gb",
        "user": _UID,
        "expose": [str(plan.image.port)],
        "healthcheck": _healthcheck(plan),
        "restart": "unless-stopped",
        # pytei drains the router for serve.stop_timeout before it kills it
        "stop_grace_period": f"{math.ceil(plan.stop_timeout) + 10}s",
        "labels": {"io.pytei.service": service.name, "io.pytei.replica": suffix},
    }
    if gpu is not None:
        container["deploy"] = {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "device_ids": [gpu], "capabilities": ["gpu"]}]
                }
            }
        }
    return container


def nginx_conf(plan: DeployPlan) -> str:
    """One upstream and one listener per service (listening on 8080 + its index inside)."""
    blocks = []
    for index, service in enumerate(plan.services):
        servers = "\n".join(
            f"        server {service.name}-{suffix}:{plan.image.port} max_fails=1 fail_timeout=5s;"
            for suffix, _ in service.instances
        )
        blocks.append(
            f"""    upstream {service.name.replace("-", "_")} {{
        least_conn;
{servers}
        keepalive 32;
    }}
    server {{
        listen {8080 + index};
        location = /nginx-health {{ return 200 "ok\\n"; }}
        location / {{
            proxy_pass http://{service.name.replace("-", "_")};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
            proxy_read_timeout {math.ceil(max(60.0, plan.stop_timeout * 3))}s;
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries {max(2, len(service.instances) + 1)};
        }}
    }}"""
        )
    body = "\n".join(blocks)
    return f"""# Rendered by pytei deploy compose: one upstream per service of pytei.yaml.
worker_processes auto;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    # clients keep their connections (pytei.Client pools them): nginx's default closes one after
    # 1000 requests, and a request sent as it closes fails on the client's side
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_max_body_size 64m;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
{body}
}}
"""


def cpu_sets(count: int, cores: list[int]) -> list[str] | None:
    """Disjoint core sets for ``count`` CPU routers on one host, or None when they would not
    each get a core.  Without them every replica sizes its thread pools for all the cores and
    they fight over them (measured: two unpinned ort replicas on 2 cores served 0.62x one)."""
    if count < 2 or count > len(cores):
        return None
    share = len(cores) // count
    return [",".join(str(c) for c in cores[i * share : (i + 1) * share]) for i in range(count)]


def render_compose(plan: DeployPlan, cores: list[int] | None = None) -> dict[str, Any]:
    """The compose document; ``cores`` (the deploying host's) pins CPU replicas to their own."""
    services: dict[str, Any] = {}
    for service in plan.services:
        for suffix, gpu in service.instances:
            services[f"{service.name}-{suffix}"] = _router(plan, service, suffix, gpu)
    routers = list(services)
    cpu_routers = [name for name in routers if "deploy" not in services[name]]
    sets = cpu_sets(len(cpu_routers), cores) if cores else None
    for name, cpuset in zip(cpu_routers, sets or [], strict=False):
        services[name]["cpuset"] = cpuset
    services["balancer"] = {
        "image": plan.image.tag,
        "entrypoint": ["/usr/sbin/nginx", "-c", "/etc/pytei/nginx.conf", "-g", "daemon off;"],
        "volumes": ["./nginx.conf:/etc/pytei/nginx.conf:ro"],
        "read_only": True,
        "tmpfs": ["/tmp:mode=1777"],
        "user": _UID,
        "ports": [f"{s.host_port}:{8080 + i}" for i, s in enumerate(plan.services)],
        "depends_on": {name: {"condition": "service_healthy"} for name in routers},
        "healthcheck": {
            "test": [
                "CMD",
                "python3",
                "-c",
                "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/nginx-health', timeout=3)",
            ],
            "interval": "5s",
            "timeout": "5s",
            "retries": 3,
        },
        "restart": "unless-stopped",
        "labels": {"io.pytei.service": "balancer"},
    }
    return {"services": services}


def write_compose_project(
    plan: DeployPlan, out: Path, project: str, cores: list[int] | None = None
) -> list[Path]:
    """compose.yaml, nginx.conf and config/<service>.yaml in ``out`` (new, empty or rendered
    by pytei before: nothing else is overwritten)."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DeployError(
            f"{out} is not empty and was not rendered by pytei deploy",
            hint="give a new or empty directory (--out)",
        )
    (out / "config").mkdir(parents=True, exist_ok=True)
    files = [out / "compose.yaml", out / "nginx.conf"]
    document = render_compose(plan, cores)
    files[0].write_text("# Rendered by pytei deploy compose; `docker compose up -d` in this folder.\n"
                        + yaml.safe_dump(document, sort_keys=False))  # fmt: skip
    files[1].write_text(nginx_conf(plan))
    for service in plan.services:
        path = out / "config" / f"{service.name}.yaml"
        path.write_text(service.config_yaml)
        files.append(path)
    # the project name for compose v1 and v2 alike (v1 rejects a top-level `name:`)
    (out / ".env").write_text(f"COMPOSE_PROJECT_NAME={project}\n")
    files.append(out / ".env")
    (out / MARKER).write_text("rendered by pytei deploy\n")
    return files
