"""What a run would change: each service's .env read, its tagged entries, and the pins that moved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from .envfile import EnvFile
from .errors import CipugError, ExitCode
from .files.atomic import read_text
from .log import Log
from .lookup.references import Resolution, is_valid_digest, parse_reference
from .lookup.resolve import resolve_all
from .services import Service, is_tagged_key
from .settings import Settings


class ImageEntry(NamedTuple):
    """A TAGGED entry of a .env: its key, its HASHED key, the interpolated reference, the current pin (or None)."""

    tagged_key: str
    hashed_key: str
    reference: str
    current: str | None


class Change(NamedTuple):
    """An ImageEntry whose tag now resolves to another pinned reference."""

    entry: ImageEntry
    resolution: Resolution

    @property
    def new(self) -> str:
        return self.resolution.pinned


class Skip(NamedTuple):
    """A change found that does not go ahead (cipug.holds decides): held, failed before, or not due yet."""

    change: Change
    # HELD, FAILED_BEFORE or NOT_DUE.
    reason: str
    # Says why, within one line.
    detail: str
    # When a NOT_DUE change becomes due (ISO time).
    due: str | None = None


HELD, FAILED_BEFORE, NOT_DUE = "held", "failed before", "not due"


@dataclass
class ServicePlan:
    """One service as read, and what the resolved digests mean for it.

    `changes` are the changes that go ahead; those held back are in `skipped`, and `hold` describes
    a hold on the whole service (empty without one).
    """

    service: Service
    text: str = ""
    env: EnvFile | None = None
    entries: list[ImageEntry] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    error: CipugError | None = None
    skipped: list[Skip] = field(default_factory=list)
    hold: str = ""


def image_entries(env: EnvFile) -> list[ImageEntry]:
    """The SERVICE_<NAME>_IMAGE_TAGGED entries, interpolated, with their HASHED counterparts."""
    entries = []
    for key in env.keys():
        if not is_tagged_key(key):
            continue
        hashed_key = key.removesuffix("TAGGED") + "HASHED"
        current = env.value(hashed_key) if env.get(hashed_key) is not None else None
        reference = env.value(key).strip()
        try:
            parse_reference(reference)
        except ValueError as error:
            # Refused here, before any lookup: a registry's or skopeo's answer to it would only confuse.
            assignment = env.get(key)
            lineno = assignment.lineno if assignment is not None else 0
            value = f"{reference!r} is not an image reference ({error})" if reference else "is empty"
            raise CipugError(f"{env.path}:{lineno}: {key} {value}; expected one like nextcloud:latest, "
                             "ghcr.io/org/app:1.2 or registry.example:5000/app", ExitCode.ENV_FILE_INVALID) from None
        entries.append(ImageEntry(key, hashed_key, reference, current))
    return entries


def plan_changes(entries: list[ImageEntry], resolutions: dict[str, Resolution | CipugError]) -> list[Change]:
    """The entries whose pinned reference differs from what their tag resolves to now."""
    changes = []
    for entry in entries:
        outcome = resolutions[entry.reference]
        if isinstance(outcome, CipugError):
            raise outcome
        if not is_valid_digest(outcome.digest):
            raise CipugError(f"{entry.reference}: refusing invalid digest {outcome.digest!r}", ExitCode.RESOLVE_FAILED)
        if entry.current != outcome.pinned:
            changes.append(Change(entry, outcome))
    return changes


def read_plan(service: Service) -> ServicePlan:
    """The service's .env read and its entries found; a problem is kept in `error`, not raised."""
    plan = ServicePlan(service)
    try:
        plan.text = read_text(service.env_file)
        plan.env = EnvFile.parse(plan.text, service.env_file)
        plan.entries = image_entries(plan.env)
    except OSError as error:
        plan.error = CipugError(f"{service.env_file} cannot be read: {error.strerror}", ExitCode.FILE_NOT_FOUND)
    except CipugError as error:
        plan.error = error
    return plan


def plan_services(settings: Settings, services: Iterable[Service], log: Log, *,
                  refresh: bool = False) -> list[ServicePlan]:
    """Read every service, resolve all their references at once, and work out the changes.

    `refresh` looks every reference up, whatever the cache holds.
    """
    plans = [read_plan(service) for service in services]
    pins: dict[str, set[str | None]] = {}
    for plan in plans:
        if plan.error is None:
            for entry in plan.entries:
                pins.setdefault(entry.reference, set()).add(entry.current)
    resolutions = resolve_all(pins, settings, log, refresh=refresh)
    for plan in plans:
        if plan.error is None:
            try:
                plan.changes = plan_changes(plan.entries, resolutions)
            except CipugError as error:
                plan.error = error
    return plans
