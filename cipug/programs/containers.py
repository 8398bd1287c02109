"""What the container tool runs: every compose container with its inspect data, by service folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CipugError, ExitCode
from ..settings import Settings
from .process import Runner

# Both docker compose and podman-compose label containers with the project folder, which
# finds a service's containers without re-deriving each tool's project-name rules.
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


def compose_containers(settings: Settings, runner: Runner) -> dict[Path, list[dict[str, Any]]]:
    """Every container a compose tool created, inspected, by its project folder: two calls in all.

    Raises CipugError when the container tool cannot list them.
    """
    tool = list(settings.container_tool)
    ids = runner.output([*tool, "ps", "-a", "-q", "--filter", f"label={WORKING_DIR_LABEL}"],
                        ExitCode.RESTART_FAILED, "listing containers failed").split()
    if not ids:
        return {}
    try:
        inspected = json.loads(runner.output([*tool, "inspect", *ids], ExitCode.RESTART_FAILED,
                                             "inspecting containers failed"))
    except ValueError:
        raise CipugError(f"`{tool[0]} inspect` printed output cipug cannot read", ExitCode.RESTART_FAILED) from None
    by_folder: dict[Path, list[dict[str, Any]]] = {}
    for container in inspected if isinstance(inspected, list) else []:
        labels = (container.get("Config") or {}).get("Labels") or {}
        folder = labels.get(WORKING_DIR_LABEL)
        if isinstance(folder, str):
            by_folder.setdefault(Path(folder).resolve(), []).append(container)
    return by_folder
