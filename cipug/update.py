"""The update run: read every service, resolve its tagged images, and work out what changed.

What changed is applied by cipug.apply, imported only when there is something to apply.
"""

from __future__ import annotations

import os
import time

from . import errors
from .atomicfile import read_text
from .cache import ResolutionCache
from .commands import require_tools
from .config import Config
from .envfile import EnvFile
from .errors import CipugError, combine_codes
from .imageref import Resolution, is_valid_digest
from .lock import RunLock
from .log import Log
from .record import Record
from .resolve import resolve_all
from .services import Service, find_services, missing_filtered

# Names only annotations use: collections.abc would import collections on every timer run.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .resolve import Resolver

_TAGGED_PREFIX, _TAGGED_SUFFIX = "SERVICE_", "_IMAGE_TAGGED"


class ImageEntry(Record):
    """A TAGGED entry of a .env: its key, its HASHED key, the interpolated reference, the current pin (or None)."""

    __slots__ = ()
    fields = "tagged_key hashed_key reference current"


class Change(Record):
    """An ImageEntry whose tag now resolves to another pinned reference."""

    __slots__ = ()
    fields = "entry resolution"

    @property
    def new(self) -> str:
        return self.resolution.pinned


class ServicePlan:
    """One service as read, and what the resolved digests mean for it."""

    def __init__(self, service: Service, text: str = "", env: EnvFile | None = None,
                 entries: list[ImageEntry] | None = None, changes: list[Change] | None = None,
                 error: CipugError | None = None) -> None:
        self.service, self.text, self.env, self.error = service, text, env, error
        self.entries: list[ImageEntry] = entries or []
        self.changes: list[Change] = changes or []


def is_tagged_key(key: str) -> bool:
    """SERVICE_<NAME>_IMAGE_TAGGED, NAME being letters, digits and `_` (keys hold no other characters but `.` and `-`)."""
    return (len(key) > len(_TAGGED_PREFIX) + len(_TAGGED_SUFFIX) and key.startswith(_TAGGED_PREFIX)
            and key.endswith(_TAGGED_SUFFIX) and "." not in key and "-" not in key)


def image_entries(env: EnvFile) -> list[ImageEntry]:
    """The SERVICE_<NAME>_IMAGE_TAGGED entries, interpolated, with their HASHED counterparts."""
    entries = []
    for key in env.keys():
        if not is_tagged_key(key):
            continue
        hashed_key = key[: -len("TAGGED")] + "HASHED"
        current = env.value(hashed_key) if env.get(hashed_key) is not None else None
        reference = env.value(key).strip()
        if not reference:
            assignment = env.get(key)
            raise CipugError(f"{env.path}:{assignment.lineno}: {key} is empty; expected an image reference like "
                             "nextcloud:latest", errors.ENV_FILE_INVALID)
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
            raise CipugError(f"{entry.reference}: refusing invalid digest {outcome.digest!r}", errors.RESOLVE_FAILED)
        if entry.current != outcome.pinned:
            changes.append(Change(entry, outcome))
    return changes


def short_digest(reference: str | None) -> str:
    if not reference:
        return "(none)"
    return reference.rsplit("@", 1)[-1][:19]


def snapshot_description(service: str, changes: list[Change]) -> str:
    images = ", ".join(f"{change.entry.reference} -> {change.resolution.name}@{change.resolution.digest[:19]}"
                       for change in changes)
    return f"cipug {service}: {images}"


def read_plan(service: Service) -> ServicePlan:
    plan = ServicePlan(service)
    try:
        plan.text = read_text(service.env_file)
        plan.env = EnvFile.parse(plan.text, service.env_file)
        plan.entries = image_entries(plan.env)
    except OSError as error:
        plan.error = CipugError(f"{service.env_file} cannot be read: {error.strerror}", errors.FILE_NOT_FOUND)
    except CipugError as error:
        plan.error = error
    return plan


def make_resolver(config: Config, log: Log) -> Resolver:
    """The configured resolver; exit 10 when skopeo is needed and missing."""
    if config.resolver == "skopeo" or config.registry_fallback:
        require_tools([config.skopeo_tool])
    from .skopeo import skopeo_resolver

    skopeo = skopeo_resolver(config.skopeo_tool, config.registry_timeout)
    if config.resolver == "skopeo":
        return skopeo
    # Imported here: the registry resolver is only loaded when asked for.
    from .registry import RegistryResolver

    resolver = RegistryResolver(config.registry_insecure_hosts, config.registry_timeout, log,
                                skopeo if config.registry_fallback else None)
    return resolver.resolve


def plan_services(config: Config, services: Iterable[Service], log: Log, make_resolver: Callable[[], Resolver],
                  cache: ResolutionCache) -> list[ServicePlan]:
    """Read every service, resolve all their references at once, and work out the changes."""
    plans = [read_plan(service) for service in services]
    references = [entry.reference for plan in plans if plan.error is None for entry in plan.entries]
    resolutions = resolve_all(references, make_resolver, config.resolve_workers, cache, log)
    for plan in plans:
        if plan.error is None:
            try:
                plan.changes = plan_changes(plan.entries, resolutions)
            except CipugError as error:
                plan.error = error
    return plans


def select_services(config: Config, log: Log, names: Iterable[str] = ()) -> list[Service]:
    """The configured services, narrowed to `names` when given (an unknown name is an error)."""
    services = find_services(config)
    for name in missing_filtered(config, services):
        log.warning(f"SERVICES_FILTER names {name}, but {config.services_root} has no such service")
    names = list(names)
    if names:
        known = {service.name for service in services}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CipugError(f"no such service: {', '.join(unknown)} (services: {', '.join(sorted(known)) or 'none'})",
                             errors.DIRECTORY_NOT_FOUND)
        services = [service for service in services if service.name in names]
    return services


def resolve_plans(config: Config, log: Log, services: list[Service]) -> list[ServicePlan]:
    """Plan with the configured resolver and cache; the cache is saved once."""
    cache = ResolutionCache.load(config.cache_location, config.cache_duration, log, time.time())
    plans = plan_services(config, services, log, lambda: make_resolver(config, log), cache)
    try:
        cache.save()
    except CipugError as error:
        log.warning(f"cache not saved: {error.message}")
    return plans


def report_plan(plan: ServicePlan, log: Log, dry_run: bool = False) -> None:
    name = plan.service.name
    if plan.error is not None:
        log.error(f"{name}: {plan.error.message}")
    elif not plan.entries:
        log.verbose(f"{name}: no *_IMAGE_TAGGED entries")
    elif not plan.changes:
        log.info(f"{name}: up to date ({len(plan.entries)} image{'s' if len(plan.entries) != 1 else ''})")
    elif dry_run:
        for change in plan.changes:
            log.info(f"{name}: would set {change.entry.hashed_key}={change.new} (was {change.entry.current or 'unset'})")


def update_lock(config: Config) -> RunLock:
    """The lock of every run that changes services (update, rollback): one at a time."""
    return RunLock(os.path.join(os.path.dirname(config.cache_location), "cipug.lock"))


def run_update(config: Config, log: Log, *, service_names: Iterable[str] = (), dry_run: bool = False) -> int:
    """The whole update run; the exit code."""
    # A dry run changes nothing, so it must not hold off the timer's run with the lock.
    if dry_run:
        return _update(config, log, service_names, dry_run)
    with update_lock(config):
        return _update(config, log, service_names, dry_run)


def _update(config: Config, log: Log, service_names: Iterable[str], dry_run: bool) -> int:
    services = select_services(config, log, service_names)
    plans = resolve_plans(config, log, services)
    codes = [plan.error.code for plan in plans if plan.error is not None]
    changed = [plan for plan in plans if plan.error is None and plan.changes]
    for plan in plans:
        report_plan(plan, log, dry_run)
    if changed and not dry_run:
        # Only now: most timer runs change nothing and need none of the machinery for it.
        from .apply import apply_all

        codes += apply_all(config, log, changed)
    return combine_codes(codes)
