"""The docker tier: a base image from Debian's packages, a runtime image built through the SDK,
a container that becomes healthy, and a compose deployment of two replicas behind nginx that
loses one replica under load without failing a request.  The router is the stdlib fake (CI
has no TEI source); the upstream tier's benchmarks/bench_compose.py does the same with a real
router and model.  Skipped, with the reason, where no Docker Engine answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy_fixtures import install_fake_router
from tests.support.serving import free_port, write_model_dir

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]
BASE = "pytei-base:bookworm"
TAG = "pytei-test/fake-cpu:ci"
KEY = "k3y'\"$(touch /tmp/pwned)`;|&*.+?[]{}\\"


def _engine() -> Any:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker Engine answers here ({str(exc).splitlines()[0][:120]})")
    return client


def pytei(*args: str, env: dict[str, str], timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytei", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    client = _engine()
    yield client
    client.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pytei-home")


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTEI_")}
    return {**clean, "PYTEI_HOME": str(home)}


@pytest.fixture(scope="module")
def base_image(engine: Any, env: dict[str, str]) -> str:
    """The Debian base, made here with debootstrap unless this engine has it already."""
    try:
        engine.images.get(BASE)
        return BASE
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("the base image needs debootstrap and root (apt-get install debootstrap)")
    result = pytei("image", "base", "--tag", BASE, "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    made = json.loads(result.stdout)
    assert made["suite"] == "bookworm" and made["size_bytes"] > 0
    labels = engine.images.get(BASE).labels
    assert labels["io.pytei.base.suite"] == "bookworm" and labels["io.pytei.base.python"] == "3.11"
    return BASE


@pytest.fixture(scope="module")
def runtime_image(engine: Any, base_image: str, home: Path, env: dict[str, str]) -> Iterator[str]:
    install_fake_router(home)
    model = write_model_dir(home / "models" / "tiny-bert")
    result = pytei(
        "image", "build", "--profile", "cpu", "--model-id", str(model), "--base", base_image, "--tag", TAG,
        "--startup-seconds", "30", "--json", env={**env, "PYTEI_API_KEY": KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert KEY not in result.stdout + result.stderr
    yield TAG
    engine.images.remove(TAG, force=True)


def wait_healthy(container: Any, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        container.reload()
        state = container.attrs["State"]
        if (state.get("Health") or {}).get("Status") == "healthy":
            return time.monotonic() - started
        if state["Status"] == "exited":
            break
        time.sleep(0.5)
    raise AssertionError(f"{container.name}: {container.attrs['State']}\n{container.logs().decode()[-3000:]}")


def test_the_runtime_image_is_labelled_unprivileged_and_keyless(engine: Any, runtime_image: str) -> None:
    image = engine.images.get(runtime_image)
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Healthcheck"]["Test"] == ["CMD", "python3", "/opt/pytei/healthcheck.py"]
    assert config["Entrypoint"] == ["pytei", "serve"]
    labels = config["Labels"]
    assert labels["io.pytei.profile"] == "cpu" and labels["io.pytei.device"] == "cpu"
    assert labels["io.pytei.fork-commit"] == labels["org.opencontainers.image.revision"]
    assert labels["io.pytei.patches"].startswith("0001-")
    assert labels["io.pytei.model-path"] == "/models/tiny-bert"
    every_layer = json.dumps(image.attrs) + json.dumps(image.history())
    assert KEY not in every_layer and "PYTEI_API_KEY" not in json.dumps(config["Env"])


def test_a_container_on_a_read_only_root_becomes_healthy_and_wants_the_key(engine: Any, runtime_image: str) -> None:
    port = free_port()
    container = engine.containers.run(
        runtime_image, detach=True, read_only=True, tmpfs={"/tmp": "exec,mode=1777"},
        ports={"8080/tcp": ("127.0.0.1", port)}, environment={"PYTEI_API_KEY": KEY},
    )  # fmt: skip
    try:
        wait_healthy(container)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5)
        assert refused.value.code == 401
        refused.value.close()  # an HTTPError is the response: its socket stays open until closed
        request = urllib.request.Request(f"http://127.0.0.1:{port}/info", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.load(answer)["model_id"] == "/models/tiny-bert"
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        logs = container.logs().decode()
        assert KEY not in logs  # pytei redacts TEI's Args line in what it shows
    finally:
        container.remove(force=True)


def _bench(url: str, texts: Path, out: Path, seconds: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytei", "bench", url, "--task", "embed", "--input-file", str(texts),
         "--concurrency", "4", "--warmup", "1", "--duration", str(seconds), "--output", str(out), "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_compose_two_replicas_lose_one_under_load_without_a_failed_request(
    engine: Any, runtime_image: str, home: Path, env: dict[str, str], tmp_path: Path
) -> None:
    from tests.support.compose_project import ComposeProject, compose_command

    if compose_command() is None:
        pytest.skip("no `docker compose` or `docker-compose` here")
    port = free_port()
    config = tmp_path / "pytei.yaml"
    config.write_text(f"serve:\n  port: {port}\n  stop_timeout: 5\nservices:\n  - name: embed\n    model_id: tiny-bert\n")
    out = tmp_path / "project"
    rendered = pytei("deploy", "compose", "-c", str(config), "--image", runtime_image, "--replicas", "2",
                     "--out", str(out), "--project", "pyteici", env=env)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    project = ComposeProject(out, "pyteici", env={"PYTEI_API_KEY": KEY})
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"sentence number {i} about embeddings" for i in range(64)) + "\n")
    try:
        project.up()
        project.wait_healthy(["embed-1", "embed-2", "balancer"])
        bench_env = {**env, "PYTEI_API_KEY": KEY}
        run = _bench(f"http://127.0.0.1:{port}", texts, tmp_path / "run.json", 14, bench_env)

        states: list[str] = []

        def bounce() -> None:
            time.sleep(4)
            project.stop("embed-1")  # SIGTERM: pytei drains the router, nginx replays on embed-2
            states.append(project.state("embed-1"))
            time.sleep(3)
            project.start("embed-1")

        bouncer = threading.Thread(target=bounce)
        bouncer.start()
        _, stderr = run.communicate(timeout=120)
        bouncer.join()
        assert run.returncode == 0, stderr[-3000:]
        assert states == ["exited"]  # the replica was really gone mid-run
        result = json.loads((tmp_path / "run.json").read_text())["runs"][0]
        assert result["succeeded"] > 100, result
        assert result["errors"] == {}, result["errors"]
        project.wait_healthy(["embed-1"])
    finally:
        project.down()
    try:
        assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
    finally:
        project.close()
