"""Finding the service folders under the services root."""

from __future__ import annotations

import os
from . import errors
from .config import Config
from .errors import CipugError
from .record import Record


class Service(Record):
    """A service folder under the services root with its env and compose files.

    Paths are strings: pathlib alone would cost the timer's run more start-up time than its work
    on a warm cache.
    """

    __slots__ = ()
    fields = "name folder env_file compose_file"


def select(names: list[str], include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Apply SERVICES_FILTER (include only, when given) and SERVICES_FILTER_EXCLUDE."""
    return [name for name in names if (not include or name in include) and name not in exclude]


def find_services(config: Config) -> list[Service]:
    """Service folders in name order: those holding both the compose and the env file."""
    root: str = config.services_root
    if not os.path.isdir(root):
        raise CipugError(f"SERVICES_ROOT {root} is not a directory", errors.DIRECTORY_NOT_FOUND)
    try:
        with os.scandir(root) as entries:
            folders = {entry.name: entry.path for entry in entries
                       if entry.is_dir() and not entry.name.startswith(".")}
    except OSError as error:
        raise CipugError(f"SERVICES_ROOT {root} cannot be read: {error.strerror}", errors.DIRECTORY_NOT_FOUND) from None
    services = []
    for name in select(sorted(folders), config.services_filter, config.services_filter_exclude):
        folder = folders[name]
        env_file = os.path.join(folder, config.env_file_name)
        compose_file = os.path.join(folder, config.compose_file_name)
        if os.path.isfile(env_file) and os.path.isfile(compose_file):
            services.append(Service(name, folder, env_file, compose_file))
    return services


def missing_filtered(config: Config, services: list[Service]) -> list[str]:
    """Names in SERVICES_FILTER that matched no service folder, to warn about typos."""
    found = {service.name for service in services}
    return [name for name in config.services_filter if name not in found]
