"""A router install for image tests where no TEI can be built (CI): the stdlib fake router
as ``text-embeddings-router`` beside a manifest (pytei 0.1.0's stored one, made a candle CPU
build), in a pytei home, as `pytei build` would leave it."""

from __future__ import annotations

import json
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
STORED_MANIFEST = SUPPORT.parent / "unit" / "build" / "data" / "manifest-0.1.0-ort.json"


def install_fake_router(home: Path, profile: str = "cpu") -> Path:
    directory = home / "routers" / profile
    directory.mkdir(parents=True, exist_ok=True)
    router = directory / "text-embeddings-router"
    # /usr/bin/env python3: the image's PATH starts with pytei's venv (stdlib is all it needs)
    router.write_text("#!/usr/bin/env python3\n" + (SUPPORT / "fake_router.py").read_text())
    router.chmod(0o755)
    manifest = json.loads(STORED_MANIFEST.read_text())
    manifest.update(profile=profile, profile_reason=f"--profile {profile}", features=["candle", "http"], native_libs=[])
    manifest["binary"] = {**manifest["binary"], "path": str(router)}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return router
