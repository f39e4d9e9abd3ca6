"""``pytei export onnx``: the ONNX exporter that ort routers use, on its own."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from pytei.cache import Cache
from pytei.cli._app import AppContext, emit_json, pass_app
from pytei.errors import ConfigError

__all__ = ["COMMANDS"]


@click.group("export")
def export_group() -> None:
    """Export a model for another runtime."""


@export_group.command("onnx")
@click.argument("model_id")
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean", "splade", "last-token"]),
    help="What it will be served with: splade exports the masked-LM logits, others the hidden states.",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    help="Linear layers as dynamically quantized int8 matmuls (checked to cosine >= 0.98 instead of 0.9999).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy the export here (model.onnx with the config and tokenizer files) [default: print where "
    "pytei's cache keeps it].",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def onnx(
    app: AppContext, model_id: str, pooling: str | None, quantize: str | None, out: Path | None, as_json: bool
) -> None:
    """Export MODEL_ID (directory, catalogue name or hub id) to fp32 ONNX, as `pytei serve` does
    for an ort router: torch-free, checked against a numpy forward pass of the same weights
    (cosine >= 0.9999), cached by the weights' sha256.  BERT, RoBERTa, XLM-RoBERTa and CamemBERT
    encoders, sequence classifiers and SPLADE heads.  --quantize int8 writes int8 matmuls, the
    graph `pytei serve --quantize int8` serves."""
    from pytei.models.for_ort import export_onnx  # noqa: PLC0415 (imports onnx)
    from pytei.models.resolve import resolve_model  # noqa: PLC0415

    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--out {out} exists and is not an empty directory", hint="give a new or empty directory"
        )
    settings = app.settings()
    cache = Cache.from_settings(settings)
    model = resolve_model(model_id, cache, progress=sys.stderr.isatty())
    choice = export_onnx(model, cache, pooling=pooling, quantize="int8" if quantize else None)
    directory = choice.directory
    if out is not None:
        shutil.copytree(
            directory, out, dirs_exist_ok=True, symlinks=False, ignore=shutil.ignore_patterns("reference")
        )
        directory = out
    if as_json:
        emit_json({"model": model_id, "directory": str(directory), "quantize": quantize, "note": choice.note})
        return
    app.err.print(f"[green]✓[/green] {choice.note}")
    click.echo(str(directory))


COMMANDS = [export_group]
