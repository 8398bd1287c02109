"""Finding the service folders under the services root, and choosing the ones a run works on."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .errors import CipugError, ExitCode
from .log import Log
from .settings import Settings


class Service(NamedTuple):
    """A service folder under the services root with its env and compose files."""

    name: str
    folder: Path
    env_file: Path
    compose_file: Path


def select(names: list[str], include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Apply SERVICES_FILTER (include only, when given) and SERVICES_FILTER_EXCLUDE."""
    return [name for name in names if (not include or name in include) and name not in exclude]


def find_services(settings: Settings) -> list[Service]:
    """Service folders in name order: those holding both the compose and the env file."""
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
    services = []
    for name in select(sorted(folders), settings.services_filter, settings.services_filter_exclude):
        folder = folders[name]
        env_file = folder / settings.env_file_name
        compose_file = folder / settings.compose_file_name
        if env_file.is_file() and compose_file.is_file():
            services.append(Service(name, folder, env_file, compose_file))
    return services


def select_services(settings: Settings, log: Log, names: Iterable[str] = ()) -> list[Service]:
    """The configured services, narrowed to `names` when given (an unknown name is an error)."""
    services = find_services(settings)
    found = {service.name for service in services}
    for name in settings.services_filter:
        if name not in found:
            log.warning(f"SERVICES_FILTER names {name}, but {settings.services_root} has no such service")
    names = list(names)
    if names:
        unknown = [name for name in names if name not in found]
        if unknown:
            raise CipugError(f"no such service: {', '.join(unknown)} (services: {', '.join(sorted(found)) or 'none'})",
                             ExitCode.DIRECTORY_NOT_FOUND)
        services = [service for service in services if service.name in names]
    return services
