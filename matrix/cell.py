"""Run ONE matrix cell through pytei's CLI and write matrix/results/cells/<id>.json.

    python matrix/cell.py v1.9.3--ort--all-MiniLM-L6-v2      # one cell
    python matrix/cell.py --list [--tag quick]                 # the ids

A cell that runs: `pytei fork check` (the ref's patch outcomes), `pytei build --profile P --fast
--json` (incremental; the manifest's wall time and peak memory), `pytei serve --detach --json`
(time to ready, the device and model class TEI logged, /info's kind), each route the model's
kind answers, numeric parity with pytei's numpy reference of the same weights (cosine >= 0.999
for embeddings, <= 5e-3 for scores), the Lee-corpus scores for real-weight embedders (within
+-0.005 of the reference's and above the stored floor), and throughput (texts/s in batches of
32 on bench_cpu_peers' corpus; the seed's 1000*batch/ms figure).  Any step's failure is
recorded with its reason and the cell goes on to what it can still check; the router is always
stopped.  A cell that does not run here is written with the status and reason cells.py gives it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


from matrix.cells import STATUSES, Cell, MatrixModel, load_matrix, machine_kind
from matrix.checks import accuracy_column, column, routes_and_parity, throughput_column
from matrix.grpc_client import GrpcClient, proto_of
from pytei.cache import Cache
from pytei.client import Client
from pytei.config import load_settings
from pytei.errors import ModelError, ToolVersionError
from pytei.models.resolve import packaged_model_dir
from pytei.serving.gpu import model_device
from tests.support import model_fixtures
from tests.support.tiny_models import TinySpec

RESULTS = Path(__file__).with_name("results")
CELLS_DIR = RESULTS / "cells"


def pytei(*args: str, timeout: float = 3600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytei", *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _ref_base(ref: str) -> Path:
    return Cache.from_settings(load_settings()).area("matrix-refs") / ref.replace("/", "_")


def ref_env(ref: str, commit: str) -> dict[str, str]:
    """A pytei home and fork definition of their own for another upstream ref: tei_fork/ and
    patches/ as they are here, with the series `patches_column` refreshed for that ref laid over
    it (so patches that needed fuzz apply exactly), fork.toml's [upstream] pin moved to
    ``commit`` (the git pins stay; the build says whether they still fit)."""
    base = _ref_base(ref)
    fork = base / "fork"
    if fork.exists():
        shutil.rmtree(fork)
    shutil.copytree(ROOT / "tei_fork", fork / "tei_fork", ignore=shutil.ignore_patterns("target"))
    shutil.copytree(ROOT / "patches", fork / "patches")
    refreshed = base / "refreshed"
    if (refreshed / "series").is_file():
        for item in refreshed.iterdir():
            shutil.copy2(item, fork / "patches" / item.name)
    definition = fork / "tei_fork" / "fork.toml"
    text = definition.read_text(encoding="utf-8")
    head, sep, rest = text.partition("[upstream]")
    table, nxt, tail = rest.partition("\n[")
    table = re.sub(r'(?m)^tag = ".*"$', f'tag = "{ref}"', table)
    table = re.sub(r'(?m)^commit = "[0-9a-f]{40}"$', f'commit = "{commit}"', table)
    definition.write_text(head + sep + table + nxt + tail, encoding="utf-8")
    return {"PYTEI_HOME": str(base / "home"), "PYTEI_FORK_DIR": str(fork)}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


# --- the columns --------------------------------------------------------------------------------


def patches_column(ref: str, *, pinned: bool = True) -> dict[str, Any]:
    """Whether the series applies on ``ref`` exactly.  For another ref than the pin, patches that
    land only with fuzz or a 3-way merge are refreshed for it (`fork check --refresh-into`, into
    the ref's own area that `ref_env` reads) and the column says which were rewritten."""
    refreshed_dir = _ref_base(ref) / "refreshed"
    extra = [] if pinned else ["--refresh-into", str(refreshed_dir)]
    if not pinned and refreshed_dir.exists():
        shutil.rmtree(refreshed_dir)
    done = pytei("fork", "check", "--ref", ref, "--json", *extra, timeout=900)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return column("failing", f"pytei fork check --ref {ref} failed: {_last_line(done.stderr)}")
    outcomes = {p["patch"].split("-")[0]: p["outcome"] for p in report["patches"]}
    failed = [p for p, o in outcomes.items() if o == "fails"]
    # pytei's build applies the series exactly (offsets, or a patch already upstream, at most)
    inexact = [p for p, o in outcomes.items() if o not in ("clean", "offset", "upstream", "fails")]
    counts = {o: sum(1 for v in outcomes.values() if v == o) for o in dict.fromkeys(outcomes.values())}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items())
    found = {"outcomes": outcomes, "commit": report["commit"]}
    if failed:
        return column("failing", f"{', '.join(failed)} do not apply ({summary})", **found)
    refreshed = report.get("refreshed")
    if inexact and refreshed:
        rewritten = [name.split("-")[0] for name in refreshed["rewritten"]]
        why = f"{summary}; {', '.join(rewritten)} refreshed for {ref} to apply exactly (fork check --refresh-into)"
        return column("verified", why, refreshed=refreshed["rewritten"], **found)
    if inexact:
        why = f"{', '.join(inexact)} apply only with fuzz or a 3-way merge, which builds refuse: refresh them ({summary})"
        return column("failing", why, **found)
    return column("verified", summary, **found)


def _prebuilt(cell: Cell) -> dict[str, Any] | None:
    """On a run host that cannot build (a GPU machine without cargo), the router installed there
    from a build host (MATRIX_PREBUILT=1): its binary and manifest."""
    if os.environ.get("MATRIX_PREBUILT", "") in ("", "0"):
        return None
    from pytei.build.installs import installed_routers  # noqa: PLC0415 (only on such hosts)

    for router in installed_routers(Cache.from_settings(load_settings())):  # newest first
        manifest = router.manifest
        if manifest.profile == cell.profile.build_profile and manifest.transport == cell.profile.transport:
            return {"binary": str(router.binary), "manifest": manifest.to_json()}
    return None


def build_column(cell: Cell, mode: str, env: dict[str, str]) -> tuple[dict[str, Any], Path | None]:
    args = ["build", "--profile", cell.profile.build_profile, "--json"]
    args += ["--grpc"] if cell.profile.transport == "grpc" else []
    args += ["--fast"] if mode == "fast" else []
    data = _prebuilt(cell)
    if data is None:
        done = pytei(*args, env=env)
        if done.returncode != 0:
            return column("failing", f"pytei {' '.join(args)} exited {done.returncode}: {_last_line(done.stderr)}"), None
        data = json.loads(done.stdout)
    manifest = data["manifest"]
    where = f"built on {manifest['build_machine']['cpu']}, carried; " if _prebuilt(cell) else ""
    mode = str(manifest.get("mode", mode))
    return column(
        "verified",
        f"{where}{manifest['wall_seconds'] / 60:.1f} min, peak {manifest['peak_memory_bytes'] / 2**30:.2f} GiB ({mode})",
        wall_s=round(manifest["wall_seconds"], 1), peak_gib=round(manifest["peak_memory_bytes"] / 2**30, 2),
        features=manifest["features"], rustc=manifest["rustc"], fork_commit=manifest["fork_commit"],
        binary_sha256=manifest["binary"].get("sha256"), manifest=str(Path(data["binary"]).parent / "manifest.json"),
    ), Path(data["binary"])  # fmt: skip


def model_dir(model: MatrixModel, work: Path) -> Path:
    """The model's directory: a catalogue model unpacked, or random weights written once."""

    cache = Cache.from_settings(load_settings())
    if model.source == "catalogue":
        return packaged_model_dir(model.name, cache)

    out = work / model.name
    if model.kind == "hybrid":
        return model_fixtures.tiny_m3_dir(out, seed=7)
    return model_fixtures.tiny_model_dir(out, TinySpec(**model.spec), seed=7)


# --- one cell ---------------------------------------------------------------------------------------


def run_cell(cell: Cell, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    record: dict[str, Any] = {"id": cell.id, "ref": cell.ref, "profile": cell.profile.name,
                              "model": cell.model.name if cell.model else "(any)", "runs": cell.runs,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "columns": {}}  # fmt: skip
    columns: dict[str, Any] = record["columns"]
    if not cell.runs:
        if not cell.pinned:
            columns["patches"] = patches_column(cell.ref, pinned=False)
            if columns["patches"]["status"] == "failing":
                why = f"pytei's series does not apply on {cell.ref}: {columns['patches']['detail']}"
                columns["build"] = column("unsupported", why)
                record.update(status="unsupported", reason=why)
                return record
        elif cell.model is None:
            columns["plan"] = plan_column(cell)
        record.update(status=_overall(columns, cell.status), reason=_first_problem(columns) or cell.reason)
        return record
    assert cell.model is not None
    prebuilt = _prebuilt(cell)
    if prebuilt is not None:  # no upstream checkout on such a host: the build host applied them
        applied = prebuilt["manifest"]["patches"]
        columns["patches"] = column("verified", f"{len(applied)} applied where it was built (its manifest)")
    else:
        columns["patches"] = patches_column(cell.ref, pinned=cell.pinned)
    env: dict[str, str] = {}
    if not cell.pinned:
        if columns["patches"]["status"] == "failing":
            why = f"pytei's series does not apply on {cell.ref}: {columns['patches']['detail']}"
            columns["build"] = column("unsupported", why)
            record.update(status="unsupported", reason=why)
            return record
        env = ref_env(cell.ref, columns["patches"]["commit"])
    columns["build"], binary = build_column(cell, str(settings.get("build_mode", "fast")), env)
    if binary is None:
        record.update(status="failing", reason=columns["build"]["detail"])
        return record
    try:
        directory = model_dir(cell.model, work)
    except ModelError as exc:  # e.g. a catalogue model not carried to a host without network
        columns["model"] = column("untested", f"the model is not available here: {exc.message}")
        record.update(status="untested", reason=columns["model"]["detail"])
        return record
    name = f"matrix-{os.getpid()}"
    args = ["serve", "--model-id", str(directory), "--binary", str(binary), "--name", name, "--port", "auto",
            "--detach", "--json"] + (["--pooling", cell.model.pooling] if cell.model.pooling else [])  # fmt: skip
    started = time.perf_counter()
    done = pytei(*args, timeout=900, env=env)
    if done.returncode != 0:
        columns["start"] = column("failing", f"pytei serve exited {done.returncode}: {_last_line(done.stderr)}")
        record.update(status="failing", reason=columns["start"]["detail"])
        return record
    endpoint = json.loads(done.stdout)[0]
    try:
        columns.update(_served(cell, endpoint, directory, settings, time.perf_counter() - started))
    finally:
        pytei("stop", name, timeout=120, env=env)
        record["artifacts"] = _keep_artifacts(cell, columns["build"].get("manifest"), endpoint.get("log_path"))
    record.update(status=_overall(columns, None), reason=_first_problem(columns))
    return record


def _served(cell: Cell, endpoint: dict[str, Any], directory: Path, settings: dict[str, Any], ready_s: float) -> dict[str, Any]:

    assert cell.model is not None
    log = Path(endpoint["log_path"]).read_text(encoding="utf-8", errors="replace")
    device = model_device(log)
    columns: dict[str, Any] = {}
    grpc = cell.profile.transport == "grpc"
    def connect() -> Any:
        if grpc:
            return GrpcClient(endpoint["url"], proto_of(Cache.from_settings(load_settings()).root))
        return Client(endpoint["url"], timeout=300)

    with connect() as client:
        info = client.info()
        # gRPC's Info has no pooling, so a SPLADE model is an embedding model there
        kinds = {"hybrid": "splade", **({"splade": "embedding", "hybrid": "embedding"} if grpc else {})}
        expected_kind = kinds.get(cell.model.kind, cell.model.kind)
        started_detail = f"ready in {ready_s:.1f} s; {device[0]} on {device[1]}" if device else f"ready in {ready_s:.1f} s"
        kind_ok = info.kind == expected_kind
        columns["start"] = column(
            "verified" if kind_ok else "failing",
            started_detail + ("" if kind_ok else f"; /info says {info.kind}, expected {expected_kind}"),
            ready_s=round(ready_s, 2), device=device[1] if device else None, model_class=device[0] if device else None,
            info_kind=info.kind, served_dir=endpoint.get("model_dir"), log=endpoint["log_path"],
        )  # fmt: skip
        for name, compute in (
            ("routes", lambda: routes_and_parity(client, cell.model, directory)),
            ("accuracy", lambda: accuracy_column(client, cell.model, directory)),
            ("throughput", lambda: throughput_column(connect, cell.model, int(settings.get("batch", 32)), float(settings.get("bench_seconds", 10)),
                                                     tuple(int(c) for c in settings.get("concurrency", [1])))),
        ):  # fmt: skip
            try:
                value = compute()
            except Exception as exc:  # noqa: BLE001 (recorded; the cell goes on)
                value = column("failing", f"{type(exc).__name__}: {str(exc)[:300]}", trace=traceback.format_exc()[-1500:])
            if name == "routes" and isinstance(value, tuple):
                columns["routes"], columns["parity"] = value
            else:
                columns[name] = value
    return columns


def _keep_artifacts(cell: Cell, manifest: str | None, log: str | None) -> dict[str, str]:
    """The router's manifest and the end of its log beside the cell file (the report links them)."""
    target = RESULTS / "artifacts" / cell.id
    target.mkdir(parents=True, exist_ok=True)
    kept: dict[str, str] = {}
    if manifest and Path(manifest).is_file():
        shutil.copyfile(manifest, target / "manifest.json")
        kept["manifest"] = f"artifacts/{cell.id}/manifest.json"
    if log and Path(log).is_file():
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()[-300:]
        (target / "router.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
        kept["log"] = f"artifacts/{cell.id}/router.log"
    return kept


def plan_column(cell: Cell) -> dict[str, Any]:
    args = ["build", "--profile", cell.profile.build_profile, "--dry-run", "--json"]
    args += ["--grpc"] if cell.profile.transport == "grpc" else []
    done = pytei(*args, timeout=600)
    if done.returncode == ToolVersionError.exit_code:  # the toolkit cannot target it: by design
        return column("unsupported", f"no plan: {_last_line(done.stderr).removeprefix('pytei: error: ')}")
    if done.returncode != 0:
        return column("failing", f"the plan fails: {_last_line(done.stderr)}")
    plan = json.loads(done.stdout)
    needed = [t for t, state in (plan.get("tools") or {}).items() if state == "needed"] if isinstance(plan.get("tools"), dict) else []
    features = plan.get("features") or plan.get("request", {}).get("features") or []
    detail = f"features {','.join(features)}" + (f"; tools needed on the build host: {', '.join(needed)}" if needed else "")
    return column("verified", detail, features=features)


def _overall(columns: dict[str, Any], given: str | None) -> str:
    statuses = [c["status"] for c in columns.values() if isinstance(c, dict) and "status" in c]
    if any(s != "not-applicable" for s in statuses):  # a column that cannot apply does not rate the cell
        statuses = [s for s in statuses if s != "not-applicable"]
    if given is not None:
        statuses = [s for s in statuses if s in ("failing", "unsupported")] + [given]
    return next((s for s in STATUSES if s in statuses), given or "untested")


def _first_problem(columns: dict[str, Any]) -> str:
    for name, value in columns.items():
        if value.get("status") in ("failing", "unsupported"):
            return f"{name}: {value['detail']}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cell", nargs="?")
    parser.add_argument("--list", action="store_true", help="print the cell ids (with --tag: only those)")
    parser.add_argument("--tag")
    parser.add_argument("--inputs", default="", help="the inputs digest matrix/run.py computed (kept in the file)")
    args = parser.parse_args()
    matrix = load_matrix()
    cells = {c.id: c for c in matrix.cells(machine_kind())}
    if args.list:
        for cell in cells.values():
            if args.tag is None or args.tag in cell.tags:
                print(cell.id)
        return
    if args.cell not in cells:
        raise SystemExit(f"no cell {args.cell!r}: see `python matrix/cell.py --list`")

    work = Cache.from_settings(load_settings()).area("matrix-models")
    record = run_cell(cells[args.cell], matrix.settings, work)
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["inputs"] = args.inputs
    CELLS_DIR.mkdir(parents=True, exist_ok=True)
    (CELLS_DIR / f"{args.cell}.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"{args.cell}: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else ""))


if __name__ == "__main__":
    main()
