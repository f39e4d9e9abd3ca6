"""The matrix's cells: matrix/cells.toml expanded into (ref, profile, model) cells, each either
run here or given its status and reason up front (never a blank).

Statuses (candding's five words, vLLM's legend): verified, failing, untested, unsupported,
not-applicable.  A cell that runs gets its statuses from what it measured (matrix/cell.py); the
others get them here, with the reason a reader needs.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CELLS_TOML",
    "STATUSES",
    "Cell",
    "MatrixModel",
    "MatrixProfile",
    "Matrix",
    "load_matrix",
    "machine_kind",
]

CELLS_TOML = Path(__file__).with_name("cells.toml")
Status = Literal["verified", "failing", "untested", "unsupported", "not-applicable"]
# Worst first: the order a row's overall status is taken in.
STATUSES: tuple[Status, ...] = ("failing", "unsupported", "untested", "not-applicable", "verified")
ANY_MODEL = "(any)"


@dataclass(frozen=True)
class MatrixProfile:
    name: str
    run: str  # the machine kind that runs it: cpu, gpu, jetson, arm64, macos
    base: str = ""  # the profiles.toml entry (cpu-grpc is cpu over gRPC)
    transport: str = "http"
    tags: tuple[str, ...] = ()

    @property
    def build_profile(self) -> str:
        return self.base or self.name


@dataclass(frozen=True)
class MatrixModel:
    name: str
    source: Literal["catalogue", "random", "absent"]
    kind: str = "embedding"
    pooling: str | None = None
    tags: tuple[str, ...] = ()
    onnx_only: bool = False
    reference: str = ""  # the catalogue model whose fp32 weights are the reference
    lee: dict[str, float] = field(default_factory=dict)
    like: str = ""
    why: str = ""
    parity_cosine: float = 0.999  # the bound for embeddings against the reference
    candle_why: str = ""  # why candle profiles cannot serve an onnx_only model, where it is not just the format
    spec: dict[str, Any] = field(default_factory=dict)  # TinySpec fields of a random model


@dataclass(frozen=True)
class Cell:
    ref: str
    profile: MatrixProfile
    model: MatrixModel | None  # None: a row for the whole (ref, profile)
    runs: bool
    status: Status | None = None  # set when the cell does not run
    reason: str = ""
    pinned: bool = False

    @property
    def id(self) -> str:
        return f"{self.ref}--{self.profile.name}--{self.model.name if self.model else 'any'}"

    @property
    def tags(self) -> list[str]:
        tags = {"cpu" if self.profile.run == "cpu" else "gpu" if self.profile.run.startswith("gpu") else "other"}
        if self.runs and self.pinned and "quick" in self.profile.tags and self.model and "quick" in self.model.tags:
            tags.add("quick")
        return sorted(tags)


@dataclass(frozen=True)
class Matrix:
    settings: dict[str, Any]
    refs: tuple[tuple[str, bool], ...]  # (name, pinned)
    ref_subsets: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # other refs: (profiles, models) run
    profiles: tuple[MatrixProfile, ...]
    models: tuple[MatrixModel, ...]

    def cells(self, kind: str) -> list[Cell]:
        """Every cell, for a machine of ``kind`` (see :func:`machine_kind`)."""
        out: list[Cell] = []
        for ref, pinned in self.refs:
            subset_profiles, subset_models = self.ref_subsets.get(ref, ((), ()))
            for profile in self.profiles:
                if not pinned and (profile.name not in subset_profiles or profile.run != kind):
                    why = (f"needs a {profile.run} machine (this is {kind})" if profile.run != kind
                           else f"on {ref} only {', '.join(subset_profiles)} are built")  # fmt: skip
                    out.append(Cell(ref, profile, None, runs=False, status="untested",
                                    reason=f"{why}; its patches are checked (pytei fork check --ref {ref})"))  # fmt: skip
                elif not pinned:
                    out.extend(c for c in self._model_cells(ref, profile, pinned=False) if c.model and c.model.name in subset_models)
                elif profile.run != kind:
                    out.append(Cell(ref, profile, None, runs=False, status="untested", pinned=True, reason=(
                        f"needs a {profile.run} machine (this is {kind}); the build plan is checked with --dry-run"
                    )))  # fmt: skip
                else:
                    out.extend(self._model_cells(ref, profile))
        return out

    def _model_cells(self, ref: str, profile: MatrixProfile, *, pinned: bool = True) -> list[Cell]:
        cells = []
        for model in self.models:
            ort = profile.build_profile == "ort"
            if model.source == "absent":
                cells.append(Cell(ref, profile, model, False, "untested", model.why, pinned=pinned))
            elif model.onnx_only and not ort:
                why = model.candle_why or "an ONNX graph only: candle serves safetensors (serve it on the ort profile)"
                cells.append(Cell(ref, profile, model, False, "not-applicable", why, pinned=pinned))
            else:
                cells.append(Cell(ref, profile, model, True, pinned=pinned))
        return cells


def machine_kind() -> str:
    """cpu (x86-64 Linux), gpu:<compute cap> (nvidia-smi answers), arm64, jetson or macos."""
    system, arch = platform.system().lower(), platform.machine().lower()
    if system == "darwin":
        return "macos" if arch == "arm64" else "macos-x86_64"
    if Path("/etc/nv_tegra_release").exists():
        return "jetson"
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=compute_cap", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False, timeout=60)
        caps = sorted({line.strip().replace(".", "") for line in done.stdout.splitlines() if line.strip()})
        if done.returncode == 0 and caps:
            return f"gpu:{caps[0]}"
    return "arm64" if arch in ("aarch64", "arm64") else "cpu"


_SPEC_KEYS = ("arch", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "layers", "labels", "sparse_head", "mlm",
              "dense_out")  # fmt: skip


def load_matrix(path: Path = CELLS_TOML) -> Matrix:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    refs = tuple((str(r["name"]), bool(r.get("pinned", False))) for r in data["ref"])
    subsets = {
        str(r["name"]): (tuple(r.get("profiles", ())), tuple(r.get("models", ())))
        for r in data["ref"]
        if not r.get("pinned", False)
    }
    profiles = tuple(
        MatrixProfile(
            name=str(p["name"]), run=str(p["run"]), base=str(p.get("base", "")),
            transport=str(p.get("transport", "http")), tags=tuple(p.get("tags", ())),
        )
        for p in data["profile"]
    )
    models = tuple(
        MatrixModel(
            name=str(m["name"]), source=m["source"], kind=str(m.get("kind", "embedding")), pooling=m.get("pooling"),
            tags=tuple(m.get("tags", ())), onnx_only=bool(m.get("onnx_only", False)),
            reference=str(m.get("reference", "")), lee=dict(m.get("lee", {})), like=str(m.get("like", "")),
            why=str(m.get("why", "")), candle_why=str(m.get("candle_why", "")), parity_cosine=float(m.get("parity_cosine", 0.999)), spec={k: m[k] for k in _SPEC_KEYS if k in m},
        )
        for m in data["model"]
    )
    return Matrix(dict(data.get("settings", {})), refs, subsets, profiles, models)
