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
    """An image's version: its OCI version label, else when it was created; None when neither is known.

    `inspected` is what `podman|docker image inspect` print for the image (`Labels` or `Config.Labels`,
    `Created`) or its config blob as a registry serves it and `skopeo inspect --config` prints it
    (`config.Labels`, `created`).
    """
    config = inspected.get("Config") or inspected.get("config")
    labels = inspected.get("Labels") or (config.get("Labels") if isinstance(config, dict) else None)
    version = labels.get(VERSION_LABEL) if isinstance(labels, dict) else None
    # A registry's text ends up on terminals and in history: one line of printable characters only.
    if isinstance(version, str) and version.strip() and version.isprintable():
        return version.strip()
    created = inspected.get("Created") or inspected.get("created")
    # Both tools and the config blob give an RFC 3339 time; to the second is enough to tell builds apart.
    if isinstance(created, str) and len(created) >= 19 and created[:19].isprintable():
        return f"built {created[:19].replace('T', ' ')}"
    return None


def image_versions(settings: Settings, runner: Runner, references: list[str]) -> dict[str, str]:
    """The versions of the local images among the pinned `references` (one not present locally is left out).

    One `image inspect` for all: podman and docker print the images they have, and exit non-zero for
    the others. An image is matched to a pin by the digests it was pulled by (RepoDigests), which
    docker gives in short form (`nginx@sha256:…`) and podman in full.
    """
    wanted = list(dict.fromkeys(references))
    if not wanted:
        return {}
    result = runner.run([*settings.container_tool, "image", "inspect", *wanted])
    try:
        inspected = json.loads(result.stdout or "[]")
    except ValueError:
        return {}
    by_digest: dict[str, str] = {}
    for image in inspected if isinstance(inspected, list) else []:
        version = image_version(image) if isinstance(image, dict) else None
        if version is None:
            continue
        for repo_digest in image.get("RepoDigests") or []:
            if isinstance(repo_digest, str):
                by_digest[repo_digest.rpartition("@")[2]] = version
    return {reference: by_digest[digest] for reference in wanted
            if (digest := reference.rpartition("@")[2]) in by_digest}
