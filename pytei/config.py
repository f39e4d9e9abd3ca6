"""Layered settings: flag > PYTEI_* environment > config file > packaged defaults.

Every setting pytei knows is declared in ``resources/defaults.toml``; its default gives its
type.  Each resolved value remembers where it came from so ``pytei config show`` can say.
The environment is passed in (never read at import time) so tests and callers control it.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pytei.errors import ConfigError

__all__ = [
    "CONFIG_FILE_NAMES",
    "SERVICE_KEYS",
    "Setting",
    "Settings",
    "defaults",
    "env_name",
    "load_settings",
]

CONFIG_FILE_NAMES = ("pytei.yaml", "pytei.yml")
# Keys a service entry of `services:` may carry (see `pytei serve -c`).
SERVICE_KEYS = frozenset(
    {"name", "model_id", "port", "hostname", "profile", "binary", "router_args", "gpus", "pooling", "env"}
)

Value = str | int | float | bool | list[str] | dict[str, str]


def defaults() -> dict[str, Value]:
    """The packaged defaults, flattened to ``section.key`` (top-level keys have no dot)."""
    text = resources.files("pytei").joinpath("resources/defaults.toml").read_text(encoding="utf-8")
    return _flatten(tomllib.loads(text))


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Value]:
    flat: dict[str, Value] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix and key not in ("git_mirrors",):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def env_name(key: str) -> str:
    """``build.jobs`` -> ``PYTEI_BUILD_JOBS``; ``git_mirrors`` -> ``PYTEI_GIT_MIRRORS``."""
    return "PYTEI_" + key.replace(".", "_").upper()


@dataclass(frozen=True)
class Setting:
    key: str
    value: Value
    source: str  # "default", "file:<path>", "env:<NAME>", "flag:<--name>"


@dataclass(frozen=True)
class Settings:
    """Resolved settings with provenance; read with the typed getters."""

    values: Mapping[str, Setting]
    services: tuple[Mapping[str, Any], ...] = ()
    config_file: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def setting(self, key: str) -> Setting:
        try:
            return self.values[key]
        except KeyError:
            raise ConfigError(f"unknown setting {key!r}", hint=_did_you_mean(key, self.values)) from None

    def get_str(self, key: str) -> str:
        return str(_expect(self.setting(key), str))

    def get_int(self, key: str) -> int:
        return int(_expect(self.setting(key), int))

    def get_float(self, key: str) -> float:
        value = self.setting(key).value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"setting {key!r} is not a number: {value!r}")
        return float(value)

    def get_bool(self, key: str) -> bool:
        return bool(_expect(self.setting(key), bool))

    def get_list(self, key: str) -> list[str]:
        return list(_expect(self.setting(key), list))

    def get_map(self, key: str) -> dict[str, str]:
        return dict(_expect(self.setting(key), dict))

    def with_flags(self, flags: Mapping[str, Value | None]) -> Settings:
        """These settings with command-line values laid on top (None means 'not given')."""
        values = dict(self.values)
        for key, raw in flags.items():
            if raw is None:
                continue
            if key not in values:
                raise ConfigError(f"unknown setting {key!r}", hint=_did_you_mean(key, values))
            flag = "--" + key.rsplit(".", 1)[-1].replace("_", "-")
            values[key] = Setting(key, _coerce(key, raw, values[key].value, f"flag {flag}"), f"flag:{flag}")
        return Settings(values, self.services, self.config_file, self.extra)


def _expect(setting: Setting, kind: type) -> Any:
    if isinstance(setting.value, bool) and kind is not bool:
        raise ConfigError(f"setting {setting.key!r} should be {kind.__name__}, got {setting.value!r}")
    if not isinstance(setting.value, kind):
        raise ConfigError(f"setting {setting.key!r} should be {kind.__name__}, got {setting.value!r}")
    return setting.value


def _did_you_mean(key: str, known: Mapping[str, object] | frozenset[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "run `pytei config show` for the known settings"


def _coerce(key: str, raw: object, default: Value, where: str) -> Value:
    """Turn a value from a file, the environment or a flag into the default's type."""
    problem = f"{where}: {key} = {raw!r}"
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise ConfigError(f"{problem} is not a boolean", hint="use true or false")
    if isinstance(default, int):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{problem} is not an integer")
    if isinstance(default, float):
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{problem} is not a number")
    if isinstance(default, list):
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
        if isinstance(raw, list | tuple) and all(isinstance(x, str | int | float) for x in raw):
            return [str(x) for x in raw]
        raise ConfigError(f"{problem} is not a list of strings")
    if isinstance(default, dict):
        if isinstance(raw, str):
            return _parse_pairs(raw, problem)
        if isinstance(raw, Mapping) and all(isinstance(k, str) for k in raw):
            return {str(k): str(v) for k, v in raw.items()}
        raise ConfigError(f"{problem} is not a mapping", hint="write KEY=VALUE pairs separated by commas")
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        return str(raw)
    raise ConfigError(f"{problem} is not a string")


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _parse_pairs(text: str, problem: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        # A key (a git URL) holds no '=', while a location may (a URL with a query).
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                f"{problem}: {item!r} is not KEY=VALUE", hint="write KEY=VALUE pairs separated by commas"
            )
        pairs[key.strip()] = value.strip()
    return pairs


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if path.name == "pyproject.toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        section = data.get("tool", {}).get("pytei", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [tool.pytei] must be a table")
        return section
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(
            f"{path}: malformed YAML at {where}: {problem}",
            hint=f"fix {path.name} at {where}",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, not {type(data).__name__}")
    return data


def find_config_file(cwd: Path) -> Path | None:
    """``pytei.yaml`` in ``cwd``, else a pyproject.toml there that has ``[tool.pytei]``."""
    for name in CONFIG_FILE_NAMES:
        candidate = cwd / name
        if candidate.is_file():
            return candidate
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return None
        if "pytei" in data.get("tool", {}):
            return pyproject
    return None


def _file_values(
    data: Mapping[str, Any], known: Mapping[str, Value], path: Path
) -> tuple[dict[str, Value], tuple[Mapping[str, Any], ...]]:
    found: dict[str, Value] = {}
    services: tuple[Mapping[str, Any], ...] = ()
    sections = {k.split(".", 1)[0] for k in known if "." in k}
    where = f"file {path.name}"
    for key, value in data.items():
        if key == "services":
            services = _validate_services(value, path)
        elif key in sections:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: {key!r} must be a mapping of settings")
            for sub, subvalue in value.items():
                full = f"{key}.{sub}"
                if full not in known:
                    raise ConfigError(f"{path}: unknown setting {full!r}", hint=_did_you_mean(full, known))
                found[full] = _coerce(full, subvalue, known[full], where)
        elif key in known:
            found[key] = _coerce(key, value, known[key], where)
        else:
            candidates = set(known) | sections | {"services"}
            raise ConfigError(
                f"{path}: unknown setting {key!r}", hint=_did_you_mean(key, frozenset(candidates))
            )
    return found, services


def _validate_services(value: object, path: Path) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ConfigError(f"{path}: 'services' must be a list of mappings (one per router)")
    names: set[str] = set()
    for index, item in enumerate(value):
        for key in item:
            if key not in SERVICE_KEYS:
                raise ConfigError(
                    f"{path}: services[{index}] has unknown key {key!r}",
                    hint=_did_you_mean(str(key), SERVICE_KEYS),
                )
        name = str(item.get("name") or f"service-{index}")
        if name in names:
            raise ConfigError(
                f"{path}: two services are named {name!r}", hint="give each service its own name"
            )
        names.add(name)
    return tuple(value)


def load_settings(
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config_file: Path | None = None,
    flags: Mapping[str, Value | None] | None = None,
) -> Settings:
    """Resolve every setting; ``config_file`` overrides the search in ``cwd``."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    known = defaults()
    values = {key: Setting(key, value, "default") for key, value in known.items()}

    path = config_file if config_file is not None else find_config_file(cwd)
    services: tuple[Mapping[str, Any], ...] = ()
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        found, services = _file_values(_read_config_file(path), known, path)
        for key, value in found.items():
            values[key] = Setting(key, value, f"file:{path}")

    by_env = {env_name(key): key for key in known}
    for name, raw in env.items():
        if not name.startswith("PYTEI_"):
            continue
        setting_key = by_env.get(name)
        if setting_key is None:
            if name in _NON_SETTING_ENV:
                continue
            raise ConfigError(
                f"unknown environment variable {name}", hint=_did_you_mean(name, frozenset(by_env))
            )
        values[setting_key] = Setting(
            setting_key, _coerce(setting_key, raw, known[setting_key], f"env {name}"), f"env:{name}"
        )

    settings = Settings(values, services, path)
    return settings.with_flags(flags or {})


# PYTEI_* variables that are not settings: secrets and switches read where they are used.
_NON_SETTING_ENV = frozenset(
    {
        "PYTEI_API_KEY", "PYTEI_DEBUG", "PYTEI_UPSTREAM_TESTS", "PYTEI_TEST_MODELS",
        "PYTEI_CONTRACT_ROUTER", "PYTEI_CONTRACT_DTYPE",  # the client contract on another router
    }
)  # fmt: skip
