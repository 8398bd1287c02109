"""Drift: containers that do not run what their service's .env pins.

cipug pins images in .env, but what runs is what the compose tool last started. After a kill at
the wrong moment, a service someone started by hand on another image, or a compose file whose
`image:` does not use the `${…_HASHED}` variable, the two differ and nothing else would notice.
Containers are matched to entries by repository: a container whose image is in the repository an
entry pins runs either that pin or something else. Containers of other repositories are not
cipug's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from . import composefile
from .errors import CipugError
from .log import Log
from .lookup.references import parse_reference
from .plan import ImageEntry, ServicePlan
from .programs.containers import compose_containers
from .programs.process import Runner
from .report import short_digest
from .settings import Settings

# The label docker compose and podman-compose put on a container: its service in the compose file.
SERVICE_LABEL = "com.docker.compose.service"


class Drift(NamedTuple):
    """One container that runs something other than its entry's pin; `tag` when it runs a tag, not a digest."""

    container: str
    compose_service: str
    entry: ImageEntry
    running: str
    tag: bool

    def describe(self, compose_file: str) -> str:
        if self.tag:
            return (f"container {self.container} runs {self.running}, a tag: the `image:` of compose service "
                    f"{self.compose_service} in {compose_file} does not use ${{{self.entry.hashed_key}}}")
        return (f"container {self.container} runs {short_digest(self.running)}, but {self.entry.hashed_key} pins "
                f"{short_digest(self.entry.current)}")


def image_of(container: Mapping[str, Any]) -> str:
    """The reference a container was created from: podman's ImageName, docker's Config.Image."""
    return str(container.get("ImageName") or (container.get("Config") or {}).get("Image") or "")


def find_drift(entries: Iterable[ImageEntry], containers: Iterable[Mapping[str, Any]]) -> list[Drift]:
    """The containers that run something other than the pin of the entry for their repository."""
    by_repository: dict[str, ImageEntry] = {}
    for entry in entries:
        if entry.current:
            try:
                by_repository[parse_reference(entry.current).name] = entry
            except ValueError:
                continue
    found = []
    for container in containers:
        running = image_of(container)
        try:
            reference = parse_reference(running)
        except ValueError:
            continue
        owner = by_repository.get(reference.name)
        if owner is None or owner.current is None:
            continue
        pinned = parse_reference(owner.current)
        if reference.digest == pinned.digest:
            continue
        name = str(container.get("Name") or container.get("Id", "?")[:12]).lstrip("/")
        labels = (container.get("Config") or {}).get("Labels") or {}
        found.append(Drift(name, str(labels.get(SERVICE_LABEL, "?")), owner, running, reference.digest is None))
    return found


def drift_by_service(settings: Settings, plans: Iterable[ServicePlan], log: Log) -> dict[str, list[Drift]]:
    """The drift of every service read without error, from one listing of the containers.

    A container tool that cannot list its containers is a warning: drift is looked for, not relied on.
    """
    if not settings.check_drift:
        return {}
    try:
        containers = compose_containers(settings, Runner(log))
    except CipugError as error:
        log.warning(f"cannot compare the running containers with the pins: {error.message}")
        return {}
    found = {}
    for plan in plans:
        if plan.error is None:
            drift = find_drift(plan.entries, containers.get(plan.service.folder.resolve(), []))
            if drift:
                found[plan.service.name] = drift
    return found


def unpinned_images(plan: ServicePlan, log: Log) -> list[str]:
    """One line per compose service of a service cipug pins whose `image:` uses none of its `.env`'s pins.

    Such a service would be left on whatever its image names, in silence. Services built from a
    Dockerfile and images pinned by digest in the compose file are meant as they are.
    """
    if plan.error is not None or not plan.entries:
        return []
    try:
        compose = composefile.read(plan.service.compose_file)
    except composefile.Unsure as reason:
        log.verbose(f"{plan.service.name}: cannot tell which images use the pins: {reason}")
        return []
    pins = {entry.hashed_key for entry in plan.entries}
    return [f"{plan.service.compose_file}:{image.line}: the `image:` of compose service {name} ({image.value}) uses "
            f"none of {', '.join(sorted('${' + pin + '}' for pin in pins))}, so cipug leaves it as it is"
            for name, image in compose.images.items()
            if not pins & set(image.variables) and "@sha256:" not in image.value]
