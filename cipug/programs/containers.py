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


VERSION_LABEL = "org.opencontainers.image.version"


def image_version(inspected: dict[str, Any]) -> str | None:
    """An image's version: its OCI version label, else when it was created; None when neither is known."""
    labels = inspected.get("Labels") or (inspected.get("Config") or {}).get("Labels") or {}
    version = labels.get(VERSION_LABEL)
    if isinstance(version, str) and version.strip():
        return version.strip()
    created = inspected.get("Created")
    # Both podman and docker give an RFC 3339 time; to the second is enough to tell builds apart.
    return f"built {created[:19].replace('T', ' ')}" if isinstance(created, str) and len(created) >= 19 else None


def image_versions(settings: Settings, runner: Runner, references: list[str]) -> dict[str, str]:
    """The versions of the local images among `references` (a reference not present locally is left out)."""
    versions = {}
    for reference in dict.fromkeys(references):
        result = runner.run([*settings.container_tool, "image", "inspect", reference])
        try:
            [inspected] = json.loads(result.stdout) if result.returncode == 0 else [None]
        except ValueError:
            continue
        version = image_version(inspected) if isinstance(inspected, dict) else None
        if version:
            versions[reference] = version
    return versions
