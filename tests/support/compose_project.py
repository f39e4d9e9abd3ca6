"""A compose project rendered by ``pytei deploy compose``, driven for tests and benchmarks:
up, stop/start one container, wait for health, down, and what is left of it afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker

PROJECT_LABEL = "com.docker.compose.project"


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) where it answers, else ``docker-compose`` (v1), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


class ComposeProject:
    def __init__(self, folder: Path, project: str, env: Mapping[str, str] | None = None) -> None:
        command = compose_command()
        if command is None:
            raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")
        self.command = command
        self.folder = folder
        self.project = project
        self.env = {**os.environ, **(env or {})}
        self.client = docker.from_env()

    def close(self) -> None:
        self.client.close()

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.command, "-p", self.project, *args], cwd=self.folder, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(self.command)} {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result

    def up(self) -> None:
        self.run("up", "-d")

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "30")

    def stop(self, service: str) -> None:
        self.run("stop", "--timeout", "30", service)

    def start(self, service: str) -> None:
        self.run("start", service)

    def containers(self) -> dict[str, Any]:
        """service name -> container (all states)."""
        found = self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})
        return {c.labels.get("com.docker.compose.service", c.name): c for c in found}

    def state(self, service: str) -> str:
        """The container's state (running, exited...), whatever its last health check said."""
        container = self.containers()[service]
        container.reload()
        return str(container.attrs["State"]["Status"])

    def health(self, service: str) -> str:
        container = self.containers()[service]
        container.reload()
        state = container.attrs["State"]
        return str((state.get("Health") or {}).get("Status") or state.get("Status"))

    def wait_healthy(self, services: list[str], timeout: float = 180) -> float:
        """Seconds until every one of ``services`` is healthy; raises with their states if not."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            states = {s: self.health(s) for s in services if s in self.containers()}
            if len(states) == len(services) and all(v == "healthy" for v in states.values()):
                return time.monotonic() - started
            if any(v in ("exited", "dead") for v in states.values()):
                break
            time.sleep(0.5)
        logs = {s: self.containers()[s].logs(tail=20).decode(errors="replace") for s in services if s in self.containers()}
        raise RuntimeError(f"not healthy after {time.monotonic() - started:.0f} s: {states}\n{logs}")

    def leftovers(self) -> dict[str, list[str]]:
        label = {"label": f"{PROJECT_LABEL}={self.project}"}
        return {
            "containers": [c.name for c in self.client.containers.list(all=True, filters=label)],
            "networks": [n.name for n in self.client.networks.list(filters=label)],
            "volumes": [v.name for v in self.client.volumes.list(filters=label)],
        }
