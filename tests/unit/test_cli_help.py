"""Help texts say what users need: serve's defaults, what --fast trades."""

from __future__ import annotations

import pytest

from pytei.cli import main


def help_of(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_serve_help_shows_the_defaults_it_will_use(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "serve")
    assert "[default: '8080' (serve.port)]" in text
    assert "[default: '127.0.0.1' (serve.hostname)]" in text
    assert "never in argv" in text  # the API key


def test_build_help_says_fast_builds_compile_most_crates_unoptimised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(capsys, "build")
    assert "opt- level 0" in text or "opt-level 0" in text  # click wraps at the hyphen
    assert "installed beside the release router" in text
