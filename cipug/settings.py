"""Settings: their names, types and defaults, and how they are read.

Each setting comes from the environment as CIPUG_<NAME>, or from the JSON
object in the file named by CIPUG_CONFIG_FILE under <NAME>; the environment
wins over the file, the file over the default.

`load_settings()` gives a frozen `Settings` with one typed attribute per setting
(the setting's name in lowercase); change values with `dataclasses.replace`.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, get_args

from .errors import CipugError, ExitCode

ENV_PREFIX = "CIPUG_"
CONFIG_FILE_VARIABLE = ENV_PREFIX + "CONFIG_FILE"

StopStartMethod = Literal["compose", "systemd-system", "systemd-user"]
Resolver = Literal["skopeo", "registry"]
Restart = Literal["service", "changed"]

# Turns a raw value (a string from the environment, any JSON value from the file) into a typed one,
# relative paths taken relative to the folder given.
Parse: TypeAlias = Callable[[object, Path], object]
# A default as it would be written in the environment, a function of the environment, or None: required.
Default: TypeAlias = "str | Callable[[Mapping[str, str]], str] | None"

# The names docker compose looks for, in its order (cipug passes the one it finds with -f).
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class _Invalid(Exception):
    """A value that does not parse; `code` tells wrong type from out of range."""

    def __init__(self, accepted: str, code: ExitCode = ExitCode.WRONG_TYPE) -> None:
        super().__init__(accepted)
        self.accepted = accepted
        self.code = code


def _boolean(value: object, base: Path) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _Invalid("true/false, 1/0 or yes/no (any case)")


def _number(kind: type[int] | type[float], low: float, high: float | None) -> Callable[[object, Path], float]:
    name = "a whole number" if kind is int else "a number"
    bounds = f"{low} or more" if high is None else f"from {low} to {high}"

    def parse(value: object, base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _Invalid(f"{name} {bounds}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise _Invalid(f"{name} {bounds}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise _Invalid(f"{name} {bounds}")
        if number < low or (high is not None and number > high) or number != number:
            raise _Invalid(f"{name} {bounds}", ExitCode.INVALID_VALUE)
        return number

    return parse


def _text(value: object, base: Path) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string")
    return value


def _file_name(value: object, base: Path) -> str:
    name = _text(value, base)
    if not name or "/" in name or name in (".", ".."):
        raise _Invalid("a plain file name without '/'", ExitCode.INVALID_VALUE)
    return name


def _file_name_or_empty(value: object, base: Path) -> str:
    if _text(value, base) == "":
        return ""
    try:
        return _file_name(value, base)
    except _Invalid as error:
        raise _Invalid(f"{error.accepted}, or empty", error.code) from None


def _relative_dir(value: object, base: Path) -> str:
    path = _text(value, base)
    if path.startswith("/") or ".." in path.split("/"):
        raise _Invalid("a folder relative to each service folder, or empty", ExitCode.INVALID_VALUE)
    return path


def _path(value: object, base: Path) -> Path:
    text = _text(value, base)
    if not text:
        raise _Invalid("a non-empty path", ExitCode.INVALID_VALUE)
    # abspath, not Path.resolve: '..' is collapsed as text and symbolic links are left alone.
    return Path(os.path.abspath(os.path.join(base, os.path.expanduser(text))))


def _names(value: object, base: Path) -> tuple[str, ...]:
    items: list[str]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    elif isinstance(value, str):
        items = value.split(",")
    else:
        raise _Invalid("comma-separated names (or, in the file, a list of strings)")
    return tuple(item.strip() for item in items if item.strip())


def _command(value: object, base: Path) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(_text(value, base)))
    except ValueError as error:
        raise _Invalid(f"a command line ({error})", ExitCode.INVALID_VALUE) from None
    if not argv:
        raise _Invalid("a non-empty command line", ExitCode.INVALID_VALUE)
    return argv


def _command_or_empty(value: object, base: Path) -> tuple[str, ...]:
    if _text(value, base).strip() == "":
        return ()
    try:
        return _command(value, base)
    except _Invalid as error:
        raise _Invalid(f"{error.accepted}, or empty", error.code) from None


def _path_or_empty(value: object, base: Path) -> Path | None:
    if _text(value, base) == "":
        return None
    return _path(value, base)


def _choice(choices: object) -> Callable[[object, Path], str]:
    """A parser accepting the strings of the Literal type `choices`."""
    allowed: tuple[str, ...] = get_args(choices)

    def parse(value: object, base: Path) -> str:
        text = _text(value, base)
        if text not in allowed:
            raise _Invalid("one of " + ", ".join(allowed), ExitCode.INVALID_VALUE)
        return text

    return parse


def _state_path(environ: Mapping[str, str], systemd_var: str, system_dir: str, xdg_var: str, fallback: str,
                name: str) -> str:
    """Where systemd's StateDirectory/CacheDirectory, for root the system's folder, else the XDG base dirs
    put a file of ours."""
    systemd_dirs = environ.get(systemd_var, "")
    if systemd_dirs:
        # systemd passes a colon-separated list when several directories are configured.
        return os.path.join(systemd_dirs.split(":")[0], name)
    if os.geteuid() == 0:
        # The folders the unit's StateDirectory=/CacheDirectory=cipug give: a root shell and the timer
        # share one history, so `cipug rollback` from a shell sees the timer's updates.
        return os.path.join(system_dir, name)
    base = environ.get(xdg_var) or os.path.join(environ.get("HOME") or os.path.expanduser("~"), fallback)
    return os.path.join(base, "cipug", name)


def _default_cache(environ: Mapping[str, str]) -> str:
    return _state_path(environ, "CACHE_DIRECTORY", "/var/cache/cipug", "XDG_CACHE_HOME", ".cache", "cache.json")


def _default_history(environ: Mapping[str, str]) -> str:
    return _state_path(environ, "STATE_DIRECTORY", "/var/lib/cipug", "XDG_STATE_HOME", ".local/state",
                       "history.jsonl")


@dataclass(frozen=True)
class Setting:
    """A setting: `parse(value, base)` turns a raw value into a typed one (paths relative to `base`).

    `default` is a string as it would be written in the environment, a function of the environment
    for defaults that depend on where cipug runs, or None for a required setting.
    """

    name: str
    parse: Parse
    default: Default
    help: str
    # Shown by `cipug config` only as each URL's scheme: the rest holds tokens and passwords.
    secret: bool = False

    @property
    def attribute(self) -> str:
        """The name of the setting's field in Settings."""
        return self.name.lower()


SETTINGS: tuple[Setting, ...] = (
    Setting("SERVICES_ROOT", _path, None, "folder holding one folder per service"),
    Setting("SERVICES_FILTER", _names, "", "comma-separated service names to include only (empty: all)"),
    Setting("SERVICES_FILTER_EXCLUDE", _names, "", "comma-separated service names to skip"),
    Setting("COMPOSE_FILE_NAME", _file_name_or_empty, "",
            "a folder is a service when it has this file and the env file (empty: the first of compose's own "
            f"names, {', '.join(COMPOSE_FILE_NAMES)})"),
    Setting("ENV_FILE_NAME", _file_name, ".env", "the env file holding the *_IMAGE_TAGGED/_HASHED entries"),
    Setting("COMPOSE_TOOL", _command, "podman-compose", "compose command, split like a shell does (`docker compose` works)"),
    Setting("CONTAINER_TOOL", _command, "podman", "container command, for image pruning and health checks"),
    Setting("SERVICE_STOP_START", _boolean, "true", "restart services whose images changed"),
    Setting("STOP_START_METHOD", _choice(StopStartMethod), "compose",
            "compose: `down` + `up -d`; systemd-*: `systemctl [--user] restart <compose-tool>@<service>`"),
    Setting("RESTART", _choice(Restart), "service",
            "service: restart the whole service; changed: recreate only the compose services whose image changed "
            "(STOP_START_METHOD=compose; the whole service when the compose file cannot be read with certainty)"),
    Setting("SERVICE_SNAPSHOT", _boolean, "true", "take a snapper snapshot of a service folder before changing it"),
    Setting("SERVICE_PULL", _boolean, "true", "pull the new images before restarting"),
    Setting("PRUNE_IMAGES", _boolean, "true", "prune unused images once per run, when something changed"),
    Setting("KEEP_IMAGES", _number(int, 0, 100), "1",
            "pruning leaves the images of each entry's last N earlier pins (tagged `cipug-keep-…`), so a rollback "
            "needs no registry"),
    Setting("UPDATE_MIN_AGE", _number(float, 0, None), "0",
            "hours since cipug first saw a new digest before it is applied (0: at once)"),
    Setting("VERBOSITY", _number(int, 0, 3), "1", "0 errors only, 1 normal, 2 verbose, 3 very verbose"),
    Setting("CACHE_DURATION", _number(int, 0, None), "3600", "seconds a resolved digest is reused (0: no cache)"),
    Setting("CACHE_LOCATION", _path, _default_cache,
            "cache file; default $CACHE_DIRECTORY/cache.json, else for root /var/cache/cipug/cache.json, else "
            "$XDG_CACHE_HOME/cipug/cache.json or ~/.cache/cipug/cache.json"),
    Setting("SNAPSHOTS_DIR_SNAPPER", _relative_dir, "", "snapper snapshot folder relative to each service (e.g. .snapshots), for --check-snapshots"),
    Setting("SNAPSHOTS_DIR_BTRBK", _relative_dir, "", "btrbk snapshot folder relative to each service, for --check-snapshots"),
    Setting("SNAPSHOTS_MAX_AGE_SNAPPER", _number(float, 0, None), "1.5", "hours the newest snapper snapshot may be old"),
    Setting("SNAPSHOTS_MAX_AGE_BTRBK", _number(float, 0, None), "36", "hours the newest btrbk snapshot may be old"),
    Setting("SKOPEO_TOOL", _command, "skopeo", "skopeo command with global flags, e.g. `skopeo --registries-conf FILE`"),
    Setting("SNAPPER_TOOL", _command, "snapper", "snapper command with global flags, e.g. `snapper --no-dbus`"),
    Setting("RESOLVE_WORKERS", _number(int, 1, 64), "8", "tag resolutions run in parallel"),
    Setting("RESOLVER", _choice(Resolver), "registry",
            "registry: HTTP HEAD requests that do not count against pull quotas, skopeo for what they cannot "
            "answer faithfully; skopeo: `skopeo inspect` for every tag"),
    Setting("REGISTRY_INSECURE_HOSTS", _names, "", "comma-separated host:port names the registry resolver may reach over plain HTTP"),
    Setting("REGISTRY_TIMEOUT", _number(float, 0.1, 600), "30", "seconds one lookup may take: a skopeo call, or one request of the registry resolver"),
    Setting("REGISTRY_FALLBACK", _boolean, "true", "let the registry resolver fall back to skopeo for what it cannot do itself"),
    Setting("REGISTRY_WORKERS", _number(int, 1, 64), "64",
            "HEAD lookups of the registry resolver run in parallel, each on a connection of its own (its skopeo "
            "fallbacks: RESOLVE_WORKERS)"),
    Setting("AUTO_ROLLBACK", _boolean, "true", "put the old images back when a restarted service does not come up"),
    Setting("HEALTH_TIMEOUT", _number(int, 0, 3600), "60", "seconds to wait for restarted containers to run and be healthy (0: no wait)"),
    Setting("CHECK_DRIFT", _boolean, "true",
            "compare what the services' containers run with the pins, and bring drifted services to their pins "
            "(one `ps` and one `inspect` of the container tool per run)"),
    Setting("CHECK_VERSIONS", _boolean, "true",
            "`check` shows versions: the pins' from their local images, and each digest a tag moved to from the "
            "registry, a manifest and a config GET, which Docker Hub counts as a pull (false: only what history "
            "knows)"),
    Setting("HISTORY_FILE", _path, _default_history,
            "history of changes; default $STATE_DIRECTORY/history.jsonl, else for root /var/lib/cipug/history.jsonl, "
            "else $XDG_STATE_HOME/cipug/history.jsonl or ~/.local/state/cipug/history.jsonl"),
    Setting("NOTIFY_URLS", _names, "",
            "comma-separated Apprise URLs to send a notification to per event (needs the notify extra); secrets: "
            "give them in the environment, not in a world-readable file; `cipug config` shows only their schemes",
            secret=True),
    Setting("NOTIFY_COMMAND", _command_or_empty, "",
            "a program, split like a shell does, that gets one JSON object per event on standard input (empty: none)"),
    Setting("NOTIFY_TIMEOUT", _number(float, 0.1, 600), "30",
            "seconds one notification may take, per notifier; one that fails or takes longer is a warning"),
    Setting("METRICS_FILE", _path_or_empty, "",
            "Prometheus text file written at the end of every run, for node_exporter's textfile collector (empty: none)"),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = MappingProxyType({setting.name: setting for setting in SETTINGS})


@dataclass(frozen=True)
class Settings:
    """The effective settings, one field per entry of SETTINGS (its name in lowercase), in the same order.

    `sources` maps each setting's name to where its value came from: "default",
    "environment variable CIPUG_<NAME>" or "setting <NAME> in <config file>".
    """

    services_root: Path
    services_filter: tuple[str, ...]
    services_filter_exclude: tuple[str, ...]
    compose_file_name: str
    env_file_name: str
    compose_tool: tuple[str, ...]
    container_tool: tuple[str, ...]
    service_stop_start: bool
    stop_start_method: StopStartMethod
    restart: Restart
    service_snapshot: bool
    service_pull: bool
    prune_images: bool
    keep_images: int
    update_min_age: float
    verbosity: int
    cache_duration: int
    cache_location: Path
    snapshots_dir_snapper: str
    snapshots_dir_btrbk: str
    snapshots_max_age_snapper: float
    snapshots_max_age_btrbk: float
    skopeo_tool: tuple[str, ...]
    snapper_tool: tuple[str, ...]
    resolve_workers: int
    resolver: Resolver
    registry_insecure_hosts: tuple[str, ...]
    registry_timeout: float
    registry_fallback: bool
    registry_workers: int
    auto_rollback: bool
    health_timeout: int
    check_drift: bool
    check_versions: bool
    history_file: Path
    notify_urls: tuple[str, ...]
    notify_command: tuple[str, ...]
    notify_timeout: float
    metrics_file: Path | None
    sources: Mapping[str, str] = field(compare=False, repr=False)

    def as_json(self) -> dict[str, object]:
        """Every setting with its typed value: paths as absolute strings, commands as one shell line, lists for
        names; of a secret list of URLs only the schemes."""
        result: dict[str, object] = {}
        for setting in SETTINGS:
            value: object = getattr(self, setting.attribute)
            if setting.secret and isinstance(value, tuple):
                value = [f"{url.partition('://')[0]}://(hidden)" for url in value]
            elif isinstance(value, Path):
                value = str(value)
            elif value is None:
                value = ""
            elif isinstance(value, tuple) and setting.parse in (_command, _command_or_empty):
                value = shlex.join(value)
            elif isinstance(value, tuple):
                value = list(value)
            result[setting.name] = value
        return result

    def as_lines(self) -> list[str]:
        """Every setting as a NAME=value line, as it would be written in the environment (without CIPUG_)."""
        lines = []
        for name, value in self.as_json().items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list):
                value = ",".join(value)
            lines.append(f"{name}={value}")
        return lines


def _parse_json(text: str) -> object:
    """The value `text` holds; ValueError saying what is wrong, and where, when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except ValueError as error:  # an integer with more digits than int() takes
        raise ValueError(str(error)) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _read_file(path_text: str) -> dict[str, object]:
    path = os.path.expanduser(path_text)
    if not os.path.exists(path):
        raise CipugError(f"config file {path} (from {CONFIG_FILE_VARIABLE}) does not exist", ExitCode.FILE_NOT_FOUND)
    try:
        # utf-8-sig: a byte-order mark, which some Windows editors write, is read past.
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise CipugError(f"config file {path} cannot be read: {reason}", ExitCode.CONFIG_UNREADABLE) from None
    try:
        data = _parse_json(text)
    except ValueError as error:
        raise CipugError(f"config file {path} is not valid JSON: {error}", ExitCode.CONFIG_UNREADABLE) from None
    if not isinstance(data, dict):
        raise CipugError(
            f'config file {path} must hold a JSON object like {{"SERVICES_ROOT": "/srv/services"}}, not {type(data).__name__}',
            ExitCode.CONFIG_NOT_OBJECT,
        )
    if "CONFIG_FILE" in data:
        raise CipugError(f"config file {path}: CONFIG_FILE cannot be set inside the config file", ExitCode.INVALID_VALUE)
    unknown = sorted(set(data) - set(SETTINGS_BY_NAME))
    if unknown:
        raise CipugError(
            f"config file {path}: unknown setting {', '.join(unknown)}; known settings: {', '.join(SETTINGS_BY_NAME)}",
            ExitCode.INVALID_VALUE,
        )
    return data


def load_settings(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Read the effective settings from `environ` (default os.environ); raise CipugError naming the first bad one.

    Relative paths from the environment are taken relative to `cwd` (default the current folder),
    those from the config file relative to the file's folder.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    unknown = sorted(
        key for key in environ
        if key.startswith(ENV_PREFIX) and key != CONFIG_FILE_VARIABLE and key[len(ENV_PREFIX):] not in SETTINGS_BY_NAME
    )
    if unknown:
        raise CipugError(
            f"unknown environment variable {', '.join(unknown)}; known settings: "
            + ", ".join(ENV_PREFIX + name for name in SETTINGS_BY_NAME),
            ExitCode.INVALID_VALUE,
        )
    file_path = environ.get(CONFIG_FILE_VARIABLE, "")
    file_values = _read_file(file_path) if file_path else {}
    file_base = Path(os.path.dirname(os.path.abspath(os.path.expanduser(file_path)))) if file_path else cwd

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        env_name = ENV_PREFIX + setting.name
        raw: object
        if env_name in environ:
            raw, source, base = environ[env_name], f"environment variable {env_name}", cwd
        elif setting.name in file_values:
            raw, source, base = file_values[setting.name], f"setting {setting.name} in {file_path}", file_base
        elif setting.default is None:
            raise CipugError(
                f"{setting.name} is required: set {env_name} or {setting.name} in the config file ({setting.help})",
                ExitCode.INVALID_VALUE,
            )
        else:
            raw = setting.default(environ) if callable(setting.default) else setting.default
            source, base = "default", cwd
        try:
            values[setting.attribute] = setting.parse(raw, base)
        except _Invalid as error:
            raise CipugError(f"{source} = {json.dumps(raw)} is not valid; expected {error.accepted}", error.code) from None
        sources[setting.name] = source
    return Settings(**values, sources=MappingProxyType(sources))
