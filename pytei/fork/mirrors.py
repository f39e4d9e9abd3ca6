"""Git mirrors: upstream URLs answered from local directories or other URLs.

The mapping comes from the ``git_mirrors`` setting (``PYTEI_GIT_MIRRORS`` is comma-separated
``URL=LOCATION``).  It is applied the same way to pytei's own git calls and to cargo's git
fetches: as ``url.<LOCATION>.insteadOf=<URL>`` in the *environment* of the child process
(``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n``), never by editing the
user's git config.  Both spellings of a URL, with and without ``.git``, are mapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pytei.errors import MirrorError

__all__ = ["Mirrors", "normalize_url"]

_LOCAL_SCHEMES = ("", "file")


def normalize_url(url: str) -> str:
    """The form used to compare URLs: no trailing slash, no ``.git``, lower-case host."""
    url = url.strip().rstrip("/")
    url = url.removesuffix(".git")
    parsed = urlparse(url)
    if parsed.scheme and parsed.netloc:
        url = parsed._replace(netloc=parsed.netloc.lower()).geturl()
    return url


def _is_local(location: str) -> bool:
    parsed = urlparse(location)
    return parsed.scheme in _LOCAL_SCHEMES or (len(parsed.scheme) == 1 and location[1:3] == ":\\")


def _local_path(location: str) -> Path:
    parsed = urlparse(location)
    return Path(parsed.path if parsed.scheme == "file" else location).expanduser()


def _looks_like_git_dir(path: Path) -> bool:
    if (path / ".git").exists():
        return True
    # A bare repository (possibly without a config file, as some mirror tools write them).
    return (path / "objects").is_dir() and (path / "HEAD").is_file()


@dataclass(frozen=True)
class Mirrors:
    """URL -> location; keys are stored normalized."""

    mapping: Mapping[str, str]

    @classmethod
    def parse(cls, raw: Mapping[str, str], *, check: bool = True) -> Mirrors:
        mapping: dict[str, str] = {}
        for url, given in raw.items():
            if not url.strip() or not given.strip():
                raise MirrorError(f"git mirror {url!r}={given!r} is incomplete", hint="write URL=LOCATION")
            parsed = urlparse(url.strip())
            if not parsed.scheme or not parsed.netloc:
                raise MirrorError(
                    f"git mirror key {url!r} is not a URL",
                    hint="keys are upstream URLs such as https://github.com/huggingface/candle",
                )
            location = given.strip()
            if _is_local(location):
                path = _local_path(location).resolve()
                if check and not path.exists():
                    raise MirrorError(
                        f"the git mirror for {url} does not exist: {path}",
                        hint="fix the path in git_mirrors / PYTEI_GIT_MIRRORS, or clone the mirror there",
                    )
                if check and not _looks_like_git_dir(path):
                    raise MirrorError(
                        f"the git mirror for {url} is not a git repository: {path}",
                        hint="point it at a clone (bare or not) of the upstream repository",
                    )
                location = str(path)
            mapping[normalize_url(url)] = location
        return cls(mapping)

    def resolve(self, url: str) -> str:
        """Where git will really go for ``url`` (the mirror, or ``url`` itself)."""
        return self.mapping.get(normalize_url(url), url)

    def has(self, url: str) -> bool:
        return normalize_url(url) in self.mapping

    def git_config_pairs(self) -> list[tuple[str, str]]:
        """``(key, value)`` git config entries that redirect every spelling of each URL."""
        pairs: list[tuple[str, str]] = []
        for url, location in sorted(self.mapping.items()):
            key = f"url.{location}.insteadOf"
            # Longest match wins in git, so the .git spelling maps exactly instead of
            # becoming "<location>.git".
            pairs.append((key, url))
            pairs.append((key, url + ".git"))
        return pairs

    def git_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` plus the mirror rules, appended after any GIT_CONFIG_* already there."""
        env = dict(base)
        try:
            start = int(env.get("GIT_CONFIG_COUNT", "0") or "0")
        except ValueError:
            start = 0
        pairs = self.git_config_pairs()
        for offset, (key, value) in enumerate(pairs):
            env[f"GIT_CONFIG_KEY_{start + offset}"] = key
            env[f"GIT_CONFIG_VALUE_{start + offset}"] = value
        if pairs:
            env["GIT_CONFIG_COUNT"] = str(start + len(pairs))
        return env
