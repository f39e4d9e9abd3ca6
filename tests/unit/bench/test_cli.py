"""`pytei bench` end to end against the fake TEI: help, --json, files, API key, --serve, compare."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytei.bench.report import BenchReport
from pytei.cli import main

if TYPE_CHECKING:
    from tests.unit.bench.conftest import FakeTEI

MANIFEST_0_1_0 = Path(__file__).resolve().parents[1] / "build" / "data" / "manifest-0.1.0-ort.json"

FAST = ["--duration", "0.3", "--warmup", "0.1", "--distinct", "16"]


def _pytei(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_help_documents_runs_and_compare(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _pytei(capsys, "bench", "--help")
    assert code == 0
    assert "pytei bench URL [OPTIONS]" in out
    assert "pytei bench compare A.json B.json" in out
    for option in (
        "--concurrency",
        "--rate",
        "--sweep",
        "--tokens",
        "--task",
        "--serve",
        "--plot",
        "--api-key",
    ):
        assert option in out
    assert "compare" in out.split("Commands:")[1]
    code, out, _ = _pytei(capsys, "bench", "compare", "--help")
    assert code == 0 and "bootstrap" in out


def test_run_with_json(capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI) -> None:
    code, out, err = _pytei(
        capsys, "bench", fake_tei.url, "--concurrency", "2", "--batch-size", "4", "--json", *FAST
    )
    assert code == 0, err
    data = json.loads(out)
    report = BenchReport.from_json(data)
    assert report.target["info"]["model_id"] == "fake/MiniLM"
    assert report.target["info"]["sha"] == fake_tei.info["sha"]
    assert report.workload["task"] == "embed" and report.workload["batch_size"] == 4
    assert report.workload["tokens_per_request_mean"] == 4 * 32
    (run,) = report.runs
    assert run.concurrency == 2 and run.succeeded > 0 and run.errors == {}
    assert run.throughput.texts_per_s == pytest.approx(4 * run.throughput.requests_per_s)
    assert run.throughput.tokens_per_s == pytest.approx(128 * run.throughput.requests_per_s)
    assert set(run.server) == {"total", "tokenization", "queue", "inference"}
    # The fake router claims 7 tokens per request in x-compute-tokens.
    assert run.throughput.server_tokens_per_s == pytest.approx(7 * run.throughput.requests_per_s)
    # Each synthetic text really has 32 tokens as the router counts them (30 words + 2 special).
    body = json.loads(fake_tei.bodies[-1])
    assert all(len(text.split()) == 30 for text in body["inputs"])
    assert "closed loop, concurrency 2" in err


def test_table_output_sweep_output_and_plot(
    capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI, tmp_path: Path
) -> None:
    output, plot = tmp_path / "run.json", tmp_path / "curve.png"
    args = ["bench", fake_tei.url, "--sweep", "concurrency=1,2", "--output", str(output), "--plot", str(plot)]
    code, out, err = _pytei(capsys, *args, *FAST)
    assert code == 0, err
    assert "p99.9" in out and "c=1" in out and "c=2" in out
    assert "server-side breakdown" in out and "inference" in out
    report = BenchReport.load_file(output)
    assert [run.concurrency for run in report.runs] == [1, 2]
    assert report.load["sweep"] == {"parameter": "concurrency", "values": [1.0, 2.0]}
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_open_loop_run(capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI) -> None:
    code, out, err = _pytei(capsys, "bench", fake_tei.url, "--rate", "100", "--json", *FAST)
    assert code == 0, err
    (run,) = json.loads(out)["runs"]
    assert run["mode"] == "open" and run["rate"] == 100.0
    assert run["issued"] == 30
    assert run["schedule_lag_ms"]["count"] == 30


def test_api_key_is_sent_and_never_shown(
    capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tei.api_key = "sekret-123"
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--json", *FAST)
    assert code == 23 and "API key" in err
    monkeypatch.setenv("PYTEI_API_KEY", "sekret-123")
    code, out, err = _pytei(capsys, "bench", fake_tei.url, "--json", *FAST)
    assert code == 0, err
    assert "Bearer sekret-123" in fake_tei.auth_seen
    assert "sekret" not in out and "sekret" not in err
    monkeypatch.delenv("PYTEI_API_KEY")
    code, out, err = _pytei(capsys, "bench", fake_tei.url, "--api-key", "sekret-123", "--json", *FAST)
    assert code == 0, err
    assert "sekret" not in out and "sekret" not in err


def test_bad_input_exits_with_the_bench_code(capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI) -> None:
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--batch-size", "64", *FAST)
    assert code == 23 and "max_client_batch_size" in err
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--tokens", "1:2:3", *FAST)
    assert code == 23 and "token length" in err
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--rate", "5", "--concurrency", "2", *FAST)
    assert code == 23
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--sweep", "concurrency=1,2", "--concurrency", "2")
    assert code == 23 and "drop --concurrency" in err
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--sweep", "users=1,2")
    assert code == 23 and "bad --sweep" in err
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--serve", *FAST)
    assert code == 23 and "not both" in err
    code, _, err = _pytei(capsys, "bench", fake_tei.url, "--model-id", "x", *FAST)
    assert code == 23 and "--serve" in err


def test_all_requests_failing_is_an_error_after_the_report(
    capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI
) -> None:
    fake_tei.behavior.status = 503
    code, out, err = _pytei(capsys, "bench", fake_tei.url, "--json", *FAST)
    assert code == 23 and "no request succeeded (http_503)" in err
    assert json.loads(out)["runs"][0]["errors"]["http_503"] > 0


def test_input_file(capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI, tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text('"one two three"\n{"text": "four five"}\n', encoding="utf-8")
    code, out, err = _pytei(capsys, "bench", fake_tei.url, "--input-file", str(texts), "--json", *FAST)
    assert code == 0, err
    data = json.loads(out)
    assert data["workload"]["input_file"] == str(texts)
    assert data["workload"]["tokens_counted_by"] == "router:/tokenize"
    assert {json.loads(b)["inputs"] for b in fake_tei.bodies} <= {"one two three", "four five"}


def _fake_server_module(url: str, calls: list[dict[str, Any]]) -> types.ModuleType:
    """pytei.serving.api with a serve_process that starts nothing but finds the router (and
    its manifest) as the real one does."""
    from pytei.cache import Cache
    from pytei.serving.api import resolve_router
    from pytei.serving.options import ServeOptions

    module = types.ModuleType("pytei.serving.api")

    @contextlib.contextmanager
    def serve_process(target: Any, settings: Any, **kwargs: Any) -> Iterator[Any]:
        calls.append({**dataclasses.asdict(target), "entered": True})
        router = resolve_router(
            ServeOptions.from_settings(settings), Cache.from_settings(settings),
            binary=target.binary, profile=target.profile,
        )  # fmt: skip
        try:
            yield types.SimpleNamespace(url=url, manifest=router.manifest)
        finally:
            calls[-1]["exited"] = True

    module.serve_process = serve_process  # type: ignore[attr-defined]
    return module


def _install_router(directory: Path, sha: str) -> Path:
    """A router directory as pytei 0.1 installed it (its stored manifest, another fork commit)."""
    directory.mkdir(parents=True)
    binary = directory / "text-embeddings-router"
    binary.write_text("#!/bin/sh\n")
    manifest = json.loads(MANIFEST_0_1_0.read_text())
    manifest.update(profile="cpu", fork_commit=sha)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return binary


def test_serve_starts_and_stops_a_router_and_records_its_manifest(
    capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "pytei.serving.api", _fake_server_module(fake_tei.url, calls))
    binary = _install_router(tmp_path / "router", "abc123")
    args = ["bench", "--serve", "--model-id", "all-MiniLM-L6-v2", "--binary", str(binary), "--json", *FAST]
    code, out, err = _pytei(capsys, *args)
    assert code == 0, err
    (call,) = calls
    assert call["model_id"] == "all-MiniLM-L6-v2" and call["binary"] == binary and call["exited"]
    assert call["port"] == "auto" and call["hostname"] == "127.0.0.1"
    target = json.loads(out)["target"]
    assert target["url"] == fake_tei.url
    assert (target["manifest"]["profile"], target["manifest"]["fork_commit"]) == ("cpu", "abc123")
    assert target["served"]["model_id"] == "all-MiniLM-L6-v2"
    assert "router stopped" in err


def test_serve_finds_the_manifest_of_the_installed_router(
    capsys: pytest.CaptureFixture[str],
    fake_tei: FakeTEI,
    monkeypatch: pytest.MonkeyPatch,
    isolated_pytei: Path,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "pytei.serving.api", _fake_server_module(fake_tei.url, calls))
    _install_router(isolated_pytei / "routers" / "cpu", "def456")
    code, out, err = _pytei(capsys, "bench", "--serve", "--profile", "cpu", "--json", *FAST)
    assert code == 0, err
    assert calls[0]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"  # serve.default_model
    assert json.loads(out)["target"]["manifest"]["fork_commit"] == "def456"


def test_compare_command(capsys: pytest.CaptureFixture[str], fake_tei: FakeTEI, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        code, _, err = _pytei(capsys, "bench", fake_tei.url, "--output", str(path), *FAST)
        assert code == 0, err
    code, out, err = _pytei(capsys, "bench", "compare", str(a), str(b), "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {r["metric"] for r in rows} >= {"requests/s", "p50 ms", "p99 ms", "mean ms", "error rate"}
    assert all(r["ratio"] is None or r["ratio"] > 0 for r in rows)
    code, out, _ = _pytei(capsys, "bench", "compare", str(a), str(b))
    assert code == 0 and "B/A" in out
    # A "B" that completed half as many requests every second is worse beyond any noise.
    for path, per_second in ((a, [40, 41, 39]), (b, [20, 21, 19])):
        data = json.loads(path.read_text())
        data["runs"][0]["intervals"] = {
            "seconds": 1.0,
            "completed": per_second,
            "latency_mean_ms": [5.0, 5.1, 4.9],
        }
        path.write_text(json.dumps(data))
    code, out, err = _pytei(capsys, "bench", "compare", str(a), str(b), "--fail-if-worse")
    assert code == 23 and "worse than A beyond noise" in err and "requests/s" in err
    code, _, _ = _pytei(capsys, "bench", "compare", str(b), str(a), "--fail-if-worse")
    assert code == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, _, err = _pytei(capsys, "bench", "compare", str(a), str(bad))
    assert code == 23 and "schema version" in err
