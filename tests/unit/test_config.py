"""Settings: precedence, provenance, and clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytei.config import load_settings
from pytei.errors import ConfigError, MirrorError
from pytei.fork.mirrors import Mirrors, normalize_url


def test_defaults_have_a_type_and_a_source(tmp_path: Path) -> None:
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.get_int("build.jobs") == 0
    assert settings.get_str("build.mode") == "release"
    assert settings.get_map("git_mirrors") == {}
    assert settings.setting("build.jobs").source == "default"


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text("build:\n  jobs: 3\n  mode: fast\nserve:\n  hostname: 0.0.0.0\n")
    env = {"PYTEI_BUILD_JOBS": "5", "PYTEI_SERVE_PORT": "9999"}
    settings = load_settings(env=env, cwd=tmp_path, flags={"build.jobs": 7, "serve.port": None})
    assert settings.get_int("build.jobs") == 7
    assert settings.setting("build.jobs").source == "flag:--jobs"
    assert settings.get_str("serve.port") == "9999"
    assert settings.setting("serve.port").source == "env:PYTEI_SERVE_PORT"
    assert settings.get_str("build.mode") == "fast"
    assert settings.setting("build.mode").source.startswith("file:")
    assert settings.get_str("serve.hostname") == "0.0.0.0"
    assert settings.get_float("serve.ready_timeout") == 600.0


def test_pyproject_tool_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pytei]\nhome = "/tmp/x"\n[tool.pytei.build]\nnative = true\n')
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.get_str("home") == "/tmp/x"
    assert settings.get_bool("build.native") is True


def test_env_values_are_parsed_by_type(tmp_path: Path) -> None:
    env = {
        "PYTEI_BUILD_NATIVE": "yes",
        "PYTEI_BUILD_FEATURES": "candle, http",
        "PYTEI_GIT_MIRRORS": "https://github.com/a/b=/srv/b, https://github.com/c/d.git=file:///srv/d",
        "PYTEI_BUILD_JOB_MEMORY_GIB": "2.5",
    }
    settings = load_settings(env=env, cwd=tmp_path)
    assert settings.get_bool("build.native") is True
    assert settings.get_list("build.features") == ["candle", "http"]
    assert settings.get_map("git_mirrors") == {
        "https://github.com/a/b": "/srv/b",
        "https://github.com/c/d.git": "file:///srv/d",
    }
    assert settings.get_float("build.job_memory_gib") == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PYTEI_BUILD_JOBS": "many"}, "not an integer"),
        ({"PYTEI_BUILD_NATIVE": "perhaps"}, "not a boolean"),
        ({"PYTEI_GIT_MIRRORS": "https://x/y"}, "not KEY=VALUE"),
        ({"PYTEI_BUILD_JOBZ": "2"}, "did you mean 'PYTEI_BUILD_JOBS'"),
    ],
)
def test_bad_environment_is_a_config_error(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, cwd=tmp_path)
    assert message in info.value.one_line()


def test_unknown_file_key_suggests_the_right_one(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text("build:\n  profle: cpu\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, cwd=tmp_path)
    assert "unknown setting 'build.profle'" in str(info.value)
    assert info.value.hint == "did you mean 'build.profile'?"


def test_unknown_top_level_key_and_bad_section(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text("biuld:\n  jobs: 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'biuld'") as info:
        load_settings(env={}, cwd=tmp_path)
    assert "build" in (info.value.hint or "")
    (tmp_path / "pytei.yaml").write_text("build: 3\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(env={}, cwd=tmp_path)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text("build:\n  jobs: 2\n  features: [candle\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, cwd=tmp_path)
    assert "malformed YAML at line 4" in str(info.value)


def test_services_are_validated(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text(
        "services:\n  - name: a\n    model_id: m\n    port: 8081\n  - name: b\n    model_idd: m\n"
    )
    with pytest.raises(ConfigError, match=r"services\[1\] has unknown key 'model_idd'") as info:
        load_settings(env={}, cwd=tmp_path)
    assert "model_id" in (info.value.hint or "")
    (tmp_path / "pytei.yaml").write_text("services:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError, match="two services are named 'a'"):
        load_settings(env={}, cwd=tmp_path)


def test_config_show_reports_sources_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text("build:\n  jobs: 3\n")
    env = {**os.environ, "PYTEI_BUILD_MODE": "fast"}
    out = subprocess.run(
        [sys.executable, "-m", "pytei", "config", "show", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    rows = {row["key"]: row for row in json.loads(out.stdout)["settings"]}
    assert rows["build.jobs"]["value"] == 3 and rows["build.jobs"]["source"].endswith("pytei.yaml")
    assert rows["build.mode"]["source"] == "env:PYTEI_BUILD_MODE"
    assert rows["serve.hostname"]["source"] == "default"


def test_cli_errors_are_one_line_with_distinct_codes(tmp_path: Path) -> None:
    (tmp_path / "pytei.yaml").write_text("build:\n  jobs: [2\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytei", "config", "show"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == ConfigError.exit_code
    assert out.stderr.count("\n") == 1 and "line 3" in out.stderr and "Traceback" not in out.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "pytei", "--debug", "config", "show"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Traceback" in debug.stderr


def test_mirror_url_normalisation_and_git_env(tmp_path: Path) -> None:
    repo = tmp_path / "mirror.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    mirrors = Mirrors.parse({"https://GitHub.com/acme/tool.git/": str(repo)})
    assert normalize_url("https://GitHub.com/acme/tool.git/") == "https://github.com/acme/tool"
    assert mirrors.resolve("https://github.com/acme/tool") == str(repo)
    assert mirrors.resolve("https://github.com/acme/other") == "https://github.com/acme/other"
    env = mirrors.git_env({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "x"})
    # The user's own GIT_CONFIG entries stay; ours are appended after them.
    assert env["GIT_CONFIG_KEY_0"] == "user.name"
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert {env["GIT_CONFIG_VALUE_1"], env["GIT_CONFIG_VALUE_2"]} == {
        "https://github.com/acme/tool",
        "https://github.com/acme/tool.git",
    }


def test_mirror_errors(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match="does not exist"):
        Mirrors.parse({"https://github.com/a/b": str(tmp_path / "missing")})
    (tmp_path / "plain").mkdir()
    with pytest.raises(MirrorError, match="not a git repository"):
        Mirrors.parse({"https://github.com/a/b": str(tmp_path / "plain")})
    with pytest.raises(MirrorError, match="not a URL"):
        Mirrors.parse({"github.com/a/b": str(tmp_path)})
    # Remote mirrors are taken as given.
    assert Mirrors.parse({"https://github.com/a/b": "https://git.internal/a/b"}).resolve(
        "https://github.com/a/b.git"
    ) == "https://git.internal/a/b"
