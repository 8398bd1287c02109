"""Which programs a run needs, derived from the settings in this one place, and checking they are there."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from ..errors import CipugError, ExitCode
from ..settings import Settings


def lookup_tools(settings: Settings) -> list[tuple[str, ...]]:
    """What looking tags up calls: skopeo, unless the registry resolver runs without its fallback."""
    if settings.resolver == "skopeo" or settings.registry_fallback:
        return [settings.skopeo_tool]
    return []


def change_tools(settings: Settings) -> list[tuple[str, ...]]:
    """What changing a service with these settings calls."""
    commands = []
    if settings.service_pull or settings.service_stop_start:
        commands.append(settings.compose_tool)
    if settings.service_stop_start and settings.stop_start_method != "compose":
        commands.append(("systemctl",))
    if settings.service_snapshot:
        commands.append(settings.snapper_tool)
    if settings.prune_images or settings.service_pull or (
            settings.service_stop_start and settings.auto_rollback and settings.health_timeout > 0):
        commands.append(settings.container_tool)
    return commands


def missing_tools(commands: Sequence[Sequence[str]]) -> list[str]:
    """The programs (first words) of `commands` that cannot be found on PATH, each once."""
    return list(dict.fromkeys(argv[0] for argv in commands if shutil.which(argv[0]) is None))


def require_tools(commands: Sequence[Sequence[str]]) -> None:
    missing = missing_tools(commands)
    if missing:
        raise CipugError(
            f"required tool not found on PATH: {', '.join(missing)} (PATH is searched; set the *_TOOL settings to "
            "a full path)",
            ExitCode.TOOL_MISSING,
        )
