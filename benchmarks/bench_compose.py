"""Deploy figures with a real router and model: image size, `docker run` to healthy, and the
throughput of a compose deployment with two replicas against one, in one run.

    python benchmarks/bench_compose.py --profile ort --model-id sentence-transformers/all-MiniLM-L6-v2 \\
        --out benchmarks/results/deploy_cpu.json

Needs a router `pytei build` installed for --profile, the base image (`pytei image base`) and a
Docker Engine with compose.  Two replicas on one host share its cores: the figure says what a
second replica buys on this machine, not on two.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from pytei.cache import Cache
from pytei.config import load_settings
from pytei.models.resolve import resolve_model
from tests.support.compose_project import ComposeProject
from tests.support.serving import free_port


def pytei(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pytei", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"pytei {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def until_healthy(client: Any, image: str, rounds: int) -> list[dict[str, float]]:
    """Seconds from `docker run` to /health 200 on the published port, and to Docker's
    'healthy' (its first HEALTHCHECK runs one interval after start)."""
    out = []
    for _ in range(rounds):
        port = free_port()
        started = time.monotonic()
        container = client.containers.run(
            image, detach=True, read_only=True, tmpfs={"/tmp": "exec,mode=1777"}, ports={"8080/tcp": ("127.0.0.1", port)}
        )
        answered = None
        try:
            while time.monotonic() - started < 300:
                if answered is None:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                            if r.status == 200:
                                answered = time.monotonic() - started
                    except OSError:
                        pass
                container.reload()
                if (container.attrs["State"].get("Health") or {}).get("Status") == "healthy":
                    break
                time.sleep(0.1)
            out.append({"health_200_s": round(answered or -1, 2), "docker_healthy_s": round(time.monotonic() - started, 2)})
        finally:
            container.remove(force=True)
    return out


def bench(url: str, tokenizer: Path, seconds: int, concurrency: int, out: Path) -> dict[str, Any]:
    pytei("bench", url, "--task", "embed", "--batch-size", "8", "--tokens", "32", "--tokenizer", str(tokenizer),
          "--concurrency", str(concurrency), "--warmup", "3", "--duration", str(seconds), "--output", str(out), "--json")  # fmt: skip
    run: dict[str, Any] = json.loads(out.read_text())["runs"][0]
    return {
        "texts_per_s": round(run["throughput"]["texts_per_s"], 1),
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
        "succeeded": run["succeeded"],
        "errors": run["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ort")
    parser.add_argument("--model-id", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unpinned", action="store_true", help="also two replicas without CPU pinning")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    client = docker.from_env(timeout=300)
    started = time.monotonic()
    built = json.loads(pytei("image", "build", "--profile", args.profile, "--model-id", args.model_id, "--json"))
    build_s = time.monotonic() - started
    tag = built["tag"]
    layers = [
        {"size_mb": round(h["Size"] / 1e6, 1), "step": h["CreatedBy"][-60:]}
        for h in client.images.get(tag).history()
        if h["Size"] > 1e6
    ]
    healthy = until_healthy(client, tag, args.rounds)

    model = resolve_model(args.model_id, Cache.from_settings(load_settings()))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = folder / "pytei.yaml"
        config.write_text(f"serve:\n  port: {port}\nservices:\n  - name: embed\n    model_id: {args.model_id}\n")

        def deployment(name: str, replicas: int, *extra: str) -> ComposeProject:
            pytei("deploy", "compose", "-c", str(config), "--image", tag, "--replicas", str(replicas),
                  "--out", str(folder / name), "--project", f"pyteibench{name}", *extra)  # fmt: skip
            project = ComposeProject(folder / name, f"pyteibench{name}")
            project.up()
            project.wait_healthy([*(f"embed-{i + 1}" for i in range(replicas)), "balancer"], timeout=300)
            return project

        layouts = [("one", 1, ()), ("two", 2, ())]
        if args.unpinned:
            layouts.append(("twounpinned", 2, ("--no-cpu-pinning",)))
        for name, replicas, extra in layouts:
            project = deployment(name, replicas, *extra)
            try:
                results[name] = bench(url, model.path, args.duration, args.concurrency, folder / f"{name}.json")
                if name == "two":  # one replica gone: what is left is one core's router
                    project.stop("embed-2")
                    results["two_with_one_stopped"] = bench(
                        url, model.path, args.duration, args.concurrency, folder / "stopped.json"
                    )
            finally:
                project.down()
            results[f"leftovers_after_down_{name}"] = project.leftovers()
            project.close()
    two, one = results["two"]["texts_per_s"], results["one"]["texts_per_s"]
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count()},
        "profile": args.profile,
        "model": args.model_id,
        "image": {"tag": tag, "size_mb": round(built["size_bytes"] / 1e6, 1), "build_s": round(build_s, 1), "layers": layers},
        "run_to_healthy": healthy,
        "compose": {**results, "concurrency": args.concurrency, "batch": 8, "tokens": 32,
                    "two_over_one": round(two / one, 3) if one else None,
                    "layouts": {"one": "1 replica, all cores", "two": "2 replicas, one core each (default)",
                                "two_with_one_stopped": "the same with embed-2 stopped",
                                "twounpinned": "2 replicas sharing all cores (--no-cpu-pinning)"}},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
