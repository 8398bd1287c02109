"""registries.conf as skopeo reads it, and whether it could make skopeo's answer for a reference differ.

skopeo 1.9 (containers/image) reads one main file and drop-ins:

- the file of `--registries-conf FILE` when SKOPEO_TOOL passes it; else
  `~/.config/containers/registries.conf` when it exists; else `/etc/containers/registries.conf`;
- then the `*.conf` files, by name, of `/etc/containers/registries.conf.d` (not when the
  per-user file is the main file) and `~/.config/containers/registries.conf.d`.

It does not read `$CONTAINERS_REGISTRIES_CONF` nor `$REGISTRIES_CONFIG_PATH` (podman does; checked
with skopeo 1.9.3), so neither is read here.

For a reference, the `[[registry]]` entry with the longest matching prefix applies. A mirror that
serves tags, a prefix rewritten to another location, or a blocked registry (also the v1
`[registries.block]`) means skopeo may answer differently than the registry itself: such a reference
is left to skopeo. So is a short name (`nginx`, `org/app`) when an alias or the unqualified-search
list would name another repository than docker.io's — although skopeo's docker:// transport
applies neither (it always takes docker.io), podman would. A file that cannot be read or parsed,
and on Python 3.10 (no `tomllib`) any file at all, means "cannot tell": every reference goes to skopeo.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .references import DOCKER_HUB, Reference

SYSTEM_FILE = Path("/etc/containers/registries.conf")
SYSTEM_DIR = Path("/etc/containers/registries.conf.d")
_USER_FILE = Path(".config/containers/registries.conf")
_USER_DIR = Path(".config/containers/registries.conf.d")


@dataclass(frozen=True)
class _Entry:
    prefix: str
    location: str
    blocked: bool
    mirrors: tuple[str, ...]  # the ones that serve tags
    source: Path


@dataclass
class RegistriesConf:
    """What the files say; `problem` set: nothing can be told, every reference goes to skopeo."""

    files: tuple[Path, ...] = ()
    problem: str | None = None
    entries: dict[str, _Entry] = field(default_factory=dict)
    blocked_v1: dict[str, Path] = field(default_factory=dict)
    search: tuple[tuple[str, ...], Path] | None = None
    aliases: dict[str, tuple[str, Path]] = field(default_factory=dict)

    def reason(self, ref: Reference, written: str) -> str | None:
        """Why skopeo must answer for `ref` (as `written` in .env); None when registries.conf does not apply."""
        if self.problem:
            return self.problem
        entry = self._entry(f"{ref.name}:{ref.tag}")
        if entry is not None:
            if entry.blocked:
                return f"{entry.source} blocks {entry.prefix}"
            if entry.location and entry.location != entry.prefix and not entry.prefix.startswith("*."):
                return f"{entry.source} rewrites {entry.prefix} to {entry.location}"
            if entry.mirrors:
                return f"{entry.source} configures the mirror {entry.mirrors[0]} for {entry.prefix}"
        if ref.registry in self.blocked_v1:
            return f"{self.blocked_v1[ref.registry]} blocks {ref.registry} ([registries.block])"
        if _is_short_name(written):
            short = written.partition("@")[0]
            if ":" in short.rpartition("/")[2]:
                short = short.rpartition(":")[0]
            docker_name = f"{DOCKER_HUB}/{ref.repository}"
            alias = self.aliases.get(short)
            if alias is not None and alias[0] != docker_name:
                return f"the short name {short} is an alias of {alias[0]} in {alias[1]}"
            if self.search is not None and self.search[0] and self.search[0] != (DOCKER_HUB,):
                return (f"the short name {short} would be searched for in {', '.join(self.search[0])} "
                        f"(unqualified-search-registries in {self.search[1]})")
        return None

    def _entry(self, name: str) -> _Entry | None:
        best: _Entry | None = None
        for entry in self.entries.values():
            if _prefix_matches(entry.prefix, name) and (best is None or len(entry.prefix) > len(best.prefix)):
                best = entry
        return best


def _is_short_name(written: str) -> bool:
    first, slash, _ = written.partition("/")
    return not (slash and ("." in first or ":" in first or first == "localhost"))


def _prefix_matches(prefix: str, name: str) -> bool:
    if prefix.startswith("*."):
        host = name.partition("/")[0].rpartition(":")[0] or name.partition("/")[0]
        return host.endswith(prefix[1:])
    return name == prefix or (name.startswith(prefix) and name[len(prefix)] in "/:@")


def config_files(skopeo_tool: Sequence[str], environ: Mapping[str, str]) -> list[Path]:
    """The files skopeo reads, in its order, those that exist."""
    home = Path(environ.get("HOME") or Path.home())
    main: Path | None = None
    for position, word in enumerate(skopeo_tool[1:], 1):
        if word == "--registries-conf" and position + 1 < len(skopeo_tool):
            main = Path(skopeo_tool[position + 1])
        elif word.startswith("--registries-conf="):
            main = Path(word.partition("=")[2])
    dirs = [SYSTEM_DIR, home / _USER_DIR]
    if main is None:
        if (home / _USER_FILE).exists():
            main, dirs = home / _USER_FILE, [home / _USER_DIR]
        else:
            main = SYSTEM_FILE
    files = [main] if main.exists() else []
    for folder in dirs:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        files += [folder / name for name in names if name.endswith(".conf")]
    return files


def load_registries_conf(skopeo_tool: Sequence[str], environ: Mapping[str, str] | None = None) -> RegistriesConf:
    """What the registries.conf files skopeo would read say (see the module's docstring)."""
    files = config_files(skopeo_tool, os.environ if environ is None else environ)
    conf = RegistriesConf(tuple(files))
    if not files:
        return conf
    if sys.version_info >= (3, 11):
        return _read_files(conf, files)
    conf.problem = (f"{files[0]} exists and Python {sys.version_info[0]}.{sys.version_info[1]} cannot read "
                    "TOML (tomllib needs 3.11): cannot tell whether it configures a mirror, a rewrite or a block")
    return conf


if sys.version_info >= (3, 11):
    import tomllib

    def _read_files(conf: RegistriesConf, files: list[Path]) -> RegistriesConf:
        for path in files:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
                _merge(conf, data, path)
            except OSError as error:
                conf.problem = f"{path} cannot be read ({error.strerror}): cannot tell what it configures"
                return conf
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
                conf.problem = f"{path} is not valid TOML ({error}): cannot tell what it configures"
                return conf
            except _Unexpected as error:
                conf.problem = f"{path} has {error}: cannot tell what it configures"
                return conf
        return conf


class _Unexpected(Exception):
    pass


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Unexpected(f"{what} that is not a list of strings")
    return tuple(value)


def _merge(conf: RegistriesConf, data: dict[str, object], path: Path) -> None:
    """One file's settings over those of the files before it, as containers/image merges drop-ins."""
    registries = data.get("registry", [])
    if not isinstance(registries, list):
        raise _Unexpected("a `registry` that is not an array of tables")
    for item in registries:
        if not isinstance(item, dict):
            raise _Unexpected("a [[registry]] that is not a table")
        location = item.get("location", "")
        prefix = item.get("prefix") or location
        if not isinstance(location, str) or not isinstance(prefix, str):
            raise _Unexpected("a [[registry]] whose location or prefix is not a string")
        if not prefix:
            continue
        mirrors = item.get("mirror", [])
        if not isinstance(mirrors, list) or not all(isinstance(mirror, dict) for mirror in mirrors):
            raise _Unexpected("a `mirror` that is not an array of tables")
        digest_only = item.get("mirror-by-digest-only") is True
        serving = tuple(
            str(mirror.get("location", "")) for mirror in mirrors
            if mirror.get("pull-from-mirror", "digest-only" if digest_only else "all") != "digest-only"
        )
        conf.entries[prefix] = _Entry(prefix, location, item.get("blocked") is True, serving, path)
    search = data.get("unqualified-search-registries")
    if search is not None:
        conf.search = (_strings(search, "unqualified-search-registries"), path)
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise _Unexpected("an [aliases] that is not a table")
    for name, target in aliases.items():
        if not isinstance(target, str):
            raise _Unexpected(f"an alias {name} that is not a string")
        conf.aliases[name] = (target, path)
    # The version 1 format.
    legacy = data.get("registries", {})
    if not isinstance(legacy, dict):
        raise _Unexpected("a [registries] that is not a table")
    for kind, table in legacy.items():
        if not isinstance(table, dict):
            raise _Unexpected(f"a [registries.{kind}] that is not a table")
        hosts = _strings(table.get("registries", []), f"a [registries.{kind}] registries")
        if kind == "block":
            conf.blocked_v1.update({host: path for host in hosts})
        elif kind == "search":
            conf.search = (hosts, path)
