"""The update run: resolve every service's tagged images, then update the services whose digests moved.

Per changed service the order is fixed so that a failure leaves the service fully on its old images or
fully on its new ones: check the compose tool, snapshot, write .env, pull, restart, wait until up.
A failure after .env was written puts the old .env back (and, with AUTO_ROLLBACK, the old containers).
"""

from __future__ import annotations

import re
import time
from collections import namedtuple
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

from . import errors, history
from .atomicfile import read_text, write_atomic
from .cache import ResolutionCache
from .commands import require_tools
from .compose import ServiceControl
from .config import Config
from .envfile import EnvFile
from .errors import CipugError, Interrupted, combine_codes
from .imageref import Resolution, is_valid_digest
from .lock import run_lock
from .log import Log
from .resolve import Resolver, resolve_all, skopeo_resolver
from .services import Service, find_services, missing_filtered
from .snapper import Snapper

_TAGGED_KEY = re.compile(r"SERVICE_(?P<name>\w+?)_IMAGE_TAGGED")


# A TAGGED entry of a .env: its key, its HASHED key, the interpolated reference, the current pin (or None).
ImageEntry = namedtuple("ImageEntry", "tagged_key hashed_key reference current")


class Change(namedtuple("Change", "entry resolution")):
    """An ImageEntry whose tag now resolves to another pinned reference."""

    __slots__ = ()

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


def image_entries(env: EnvFile) -> list[ImageEntry]:
    """The SERVICE_<NAME>_IMAGE_TAGGED entries, interpolated, with their HASHED counterparts."""
    entries = []
    for key in env.keys():
        if not _TAGGED_KEY.fullmatch(key):
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
        plan.env = EnvFile.parse(plan.text, str(service.env_file))
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


def required_commands(config: Config) -> list[tuple[str, ...]]:
    """The programs updating a service with these settings calls (skopeo: see make_resolver)."""
    commands = []
    if config.service_pull or config.service_stop_start:
        commands.append(config.compose_tool)
    if config.service_stop_start and config.stop_start_method != "compose":
        commands.append(("systemctl",))
    if config.service_snapshot:
        commands.append(config.snapper_tool)
    if config.prune_images or config.service_pull or (
            config.service_stop_start and config.auto_rollback and config.health_timeout > 0):
        commands.append(config.container_tool)
    return commands


class Updater:
    """Applies one service's changes in the safe order, collecting history records."""

    def __init__(self, config: Config, log: Log, control: ServiceControl, snapper: Snapper,
                 outcome: str = history.UPDATED) -> None:
        self.config, self.log, self.control, self.snapper = config, log, control, snapper
        # What a change that took effect is called: `cipug rollback --image-only` applies older pins.
        self.outcome = outcome
        self.records: list[history.Record] = []

    def apply(self, plan: ServicePlan) -> int:
        """Update one service; its exit code. Interrupted is re-raised after the service was put back."""
        service, config, log = plan.service, self.config, self.log
        snapshot: int | None = None
        snapper_config: str | None = None
        stage = "before"
        try:
            if config.service_pull or config.service_stop_start:
                self.control.check(service)
            if config.service_snapshot:
                snapper_config = self.snapper.config_for(service.folder)
                snapshot = self.snapper.create(snapper_config, snapshot_description(service.name, plan.changes))
                log.verbose(f"{service.name}: snapper snapshot {snapshot} (config {snapper_config})")
            self._write_env(plan)
            stage = "written"
            if config.service_pull:
                self.control.pull(service, [change.new for change in plan.changes])
                log.verbose(f"{service.name}: pulled")
            if config.service_stop_start:
                stage = "restarting"
                self._restart(plan)
        except CipugError as error:
            if stage == "before":
                log.error(f"{service.name}: {error.message}; nothing was changed")
                outcome = history.FAILED
            else:
                outcome = self._roll_back(plan, error, stage == "restarting", snapshot, snapper_config)
            self._record(plan, snapshot, snapper_config, outcome, error.message)
            if isinstance(error, Interrupted):
                raise
            return error.code
        log.success(f"{service.name}: {self.outcome}" + (" and restarted" if config.service_stop_start else ""))
        self._record(plan, snapshot, snapper_config, self.outcome)
        return errors.OK

    def _write_env(self, plan: ServicePlan) -> None:
        service = plan.service
        try:
            if read_text(service.env_file) != plan.text:
                raise CipugError(f"{service.env_file} changed while cipug was running; it is left as it is",
                                 errors.ENV_WRITE_FAILED)
            values = {change.entry.hashed_key: change.new for change in plan.changes}
            after = {change.entry.hashed_key: change.entry.tagged_key for change in plan.changes}
            new_text = plan.env.updated(values, after)
        except OSError as error:
            raise CipugError(f"{service.env_file} cannot be read: {error.strerror}", errors.ENV_WRITE_FAILED) from None
        except ValueError as error:
            raise CipugError(f"{service.env_file}: {error}", errors.ENV_WRITE_FAILED) from None
        write_atomic(service.env_file, new_text)
        for change in plan.changes:
            self.log.info(f"{service.name}: {change.entry.hashed_key} {change.resolution.name} "
                          f"{short_digest(change.entry.current)} -> {short_digest(change.new)}")

    def _restart(self, plan: ServicePlan) -> None:
        self.control.restart(plan.service)
        if self.config.auto_rollback and self.config.health_timeout > 0:
            problems = self.control.wait_until_up(plan.service, self.config.health_timeout)
            if problems:
                raise CipugError(f"not up within {self.config.health_timeout} s after the restart: "
                                 + "; ".join(problems), errors.RESTART_FAILED)

    def _roll_back(self, plan: ServicePlan, error: CipugError, restarting: bool, snapshot: int | None,
                   snapper_config: str | None) -> str:
        """Put the old .env back, and after a restart also the old containers; the history outcome."""
        service, log = plan.service, self.log
        try:
            write_atomic(service.env_file, plan.text)
        except CipugError as restore_error:
            log.error(f"{service.name}: {error.message}; the old .env could NOT be put back: {restore_error.message}")
            return history.FAILED
        # The new images may already have changed the data; only a person can judge whether to undo that.
        data_hint = (f"; the data was left as it is, to restore it too: `cipug rollback {service.name} "
                     f"--snapshot {snapshot}` or `snapper -c {snapper_config} undochange {snapshot}..0`"
                     if snapshot is not None else "")
        if not restarting:
            log.error(f"{service.name}: {error.message}; the old .env was put back")
            return history.FAILED
        if not self.config.auto_rollback:
            log.error(f"{service.name}: {error.message}; the old .env was put back, the service was not "
                      f"restarted (AUTO_ROLLBACK is off){data_hint}")
            return history.FAILED
        try:
            self.control.restart(service)
        except CipugError as restart_error:
            log.error(f"{service.name}: {error.message}; the old .env was put back but restarting on the old "
                      f"images failed too: {restart_error.message}{data_hint}")
            return history.FAILED
        log.error(f"{service.name}: {error.message}; rolled back to the old images{data_hint}")
        return history.ROLLED_BACK

    def _record(self, plan: ServicePlan, snapshot: int | None, snapper_config: str | None, outcome: str,
                detail: str = "") -> None:
        time_text = history.now_iso()
        self.records += [
            history.Record(time_text, plan.service.name, change.entry.hashed_key, change.entry.reference,
                           change.entry.current, change.new, snapshot, snapper_config, outcome, detail)
            for change in plan.changes
        ]


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


def update_lock(config: Config) -> AbstractContextManager[None]:
    """The lock of every run that changes services (update, rollback): one at a time."""
    return run_lock(config.cache_location.parent / "cipug.lock")


def run_update(config: Config, log: Log, *, service_names: Iterable[str] = (), dry_run: bool = False) -> int:
    """The whole update run; the exit code."""
    # A dry run changes nothing, so it must not hold off the timer's run with the lock.
    lock = nullcontext() if dry_run else update_lock(config)
    with lock:
        services = select_services(config, log, service_names)
        plans = resolve_plans(config, log, services)
        # Before any service is touched; a run with nothing to change needs none of these.
        if not dry_run and any(plan.changes for plan in plans if plan.error is None):
            require_tools(required_commands(config))
        codes = []
        updater = Updater(config, log, ServiceControl(config), Snapper(config.snapper_tool))
        try:
            for plan in plans:
                report_plan(plan, log, dry_run)
                if plan.error is not None:
                    codes.append(plan.error.code)
                elif plan.changes and not dry_run:
                    codes.append(updater.apply(plan))
        finally:
            history.append(config.history_file, updater.records, log)
        if config.prune_images and any(record.outcome != history.FAILED for record in updater.records):
            warning = updater.control.prune_images()
            if warning:
                log.warning(warning)
    return combine_codes(codes)
