"""Finding the service folders under the services root, and choosing the ones a run works on.

A service is a folder directly under SERVICES_ROOT, its name not starting with "." (the run lock
`.cipug.lock` sits there too), holding the env file and a compose file. A folder that looks meant to
be one but is not (its env file names images, or the env file is a dangling symlink or a folder) is
reported, never skipped in silence.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .envfile import EnvFile
from .errors import CipugError, ExitCode
from .files.atomic import read_text
from .log import Log
from .settings import COMPOSE_FILE_NAMES, Settings

_TAGGED_PREFIX, _TAGGED_SUFFIX = "SERVICE_", "_IMAGE_TAGGED"


class Service(NamedTuple):
    """A service folder under the services root with its env and compose files."""

    name: str
    folder: Path
    env_file: Path
    compose_file: Path


def is_tagged_key(key: str) -> bool:
    """SERVICE_<NAME>_IMAGE_TAGGED, NAME being letters, digits and `_`."""
    return (len(key) > len(_TAGGED_PREFIX) + len(_TAGGED_SUFFIX) and key.startswith(_TAGGED_PREFIX)
            and key.endswith(_TAGGED_SUFFIX) and "." not in key and "-" not in key)


def select(names: list[str], include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Apply SERVICES_FILTER (include only, when given) and SERVICES_FILTER_EXCLUDE."""
    return [name for name in names if (not include or name in include) and name not in exclude]


def _compose_names(settings: Settings) -> tuple[str, ...]:
    return (settings.compose_file_name,) if settings.compose_file_name else COMPOSE_FILE_NAMES


def _names_images(env_file: Path) -> bool:
    """Whether the env file assigns a TAGGED entry (one that cannot be read or parsed says nothing)."""
    try:
        return any(is_tagged_key(key) for key in EnvFile.parse(read_text(env_file), env_file).keys())
    except (CipugError, OSError):
        return False


def _examine(folder: Path, settings: Settings) -> Service | str | None:
    """The folder as a service; else why it is not one, when it looks meant to be; else None."""
    env_file = folder / settings.env_file_name
    compose_file = next((folder / name for name in _compose_names(settings) if (folder / name).is_file()), None)
    if not env_file.is_file():
        if env_file.is_symlink() and not env_file.exists():
            return f"{env_file} is a symlink to {os.readlink(env_file)}, which does not exist"
        if env_file.exists():
            return f"{env_file} is {'a directory' if env_file.is_dir() else 'not a regular file'}"
        return None
    if compose_file is None:
        if not _names_images(env_file):
            return None
        return f"{env_file} has *_IMAGE_TAGGED entries, but there is no {' or '.join(_compose_names(settings))}"
    return Service(folder.name, folder, env_file, compose_file)


def find_services(settings: Settings, log: Log) -> dict[str, Service]:
    """Every service folder, filters not applied, by name; a warning for each chosen folder that is not one."""
    root = settings.services_root
    if not root.is_dir():
        raise CipugError(f"SERVICES_ROOT {root} is not a directory", ExitCode.DIRECTORY_NOT_FOUND)
    try:
        with os.scandir(root) as entries:
            folders = {entry.name: Path(entry.path) for entry in entries
                       if entry.is_dir() and not entry.name.startswith(".")}
    except OSError as error:
        raise CipugError(f"SERVICES_ROOT {root} cannot be read: {error.strerror}",
                         ExitCode.DIRECTORY_NOT_FOUND) from None
    chosen = set(select(list(folders), settings.services_filter, settings.services_filter_exclude))
    services = {}
    for name in sorted(folders):
        found = _examine(folders[name], settings)
        if isinstance(found, Service):
            services[name] = found
        elif found is not None and name in chosen:
            log.warning(f"{name}: not a service, skipped: {found}")
    if not services:
        log.warning(f"SERVICES_ROOT {root} holds no service (a folder with {settings.env_file_name} and a compose "
                    f"file: {' or '.join(_compose_names(settings))})")
    return services


def _left_out_by(name: str, settings: Settings) -> str:
    if name in settings.services_filter_exclude:
        return (f"{name} is excluded by SERVICES_FILTER_EXCLUDE ({settings.sources['SERVICES_FILTER_EXCLUDE']}); "
                "remove it there to work on it")
    return f"{name} is not in SERVICES_FILTER ({settings.sources['SERVICES_FILTER']}); add it there to work on it"


def select_services(settings: Settings, log: Log, names: Iterable[str] = ()) -> list[Service]:
    """The services the filters choose, narrowed to `names` when given (a name not chosen is an error)."""
    services = find_services(settings, log)
    for name in settings.services_filter:
        if name not in services:
            log.warning(f"SERVICES_FILTER names {name}, but {settings.services_root} has no such service")
    chosen = select(list(services), settings.services_filter, settings.services_filter_exclude)
    names = list(names)
    if not names:
        return [services[name] for name in chosen]
    unknown = [name for name in names if name not in services]
    if unknown:
        raise CipugError(f"no such service: {', '.join(unknown)} (services: {', '.join(services) or 'none'})",
                         ExitCode.DIRECTORY_NOT_FOUND)
    left_out = [name for name in names if name not in chosen]
    if left_out:
        raise CipugError("; ".join(_left_out_by(name, settings) for name in left_out), ExitCode.USAGE)
    return [services[name] for name in chosen if name in names]
