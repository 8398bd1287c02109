"""`cipug update` (and the timer's run without arguments): pin and apply every tag that moved."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..drift import Drift, drift_by_service, unpinned_images
from ..errors import CipugError, ExitCode, combine_codes
from ..files import history, intents
from ..files.intents import Intent
from ..files.lock import run_lock
from ..log import Log
from ..lookup.ratelimits import LookupReport, RateLimit
from ..lookup.references import parse_reference
from ..lookup.resolve import recording
from ..holds import record_outcomes, screen
from ..plan import ServicePlan, plan_services
from ..pruning import pins_to_keep
from ..report import report_plan
from ..services import Service, select_services
from ..settings import Settings

if TYPE_CHECKING:
    from ..transaction import Applier


def run_update(settings: Settings, log: Log, *, service_names: Iterable[str] = (), dry_run: bool = False,
               refresh: bool = False, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> ExitCode:
    """The whole update run; the exit code. `refresh` looks every tag up, whatever the cache holds."""
    # A dry run changes nothing, so it must not hold off the timer's run with the lock.
    if dry_run:
        return _update(settings, log, service_names, dry_run, refresh, sleep, clock)
    _check_notifiers(settings)
    facts = RunFacts()
    try:
        with run_lock(settings):
            code = _update(settings, log, service_names, dry_run, refresh, sleep, clock, facts=facts)
            _tell(settings, log, facts, code)
            return code
    except CipugError as error:
        # Also a run that ended early (no SERVICES_ROOT, a signal) ends with its metrics; not one that
        # found the lock held: the run holding it writes them.
        if not facts.told and error.code != ExitCode.LOCKED:
            _tell(settings, log, facts, error.code)
        raise


@dataclass
class RunFacts:
    """What a run saw and did, for the notifications and the metrics at its end: the plans, and
    the Appliers whose history records say what changed."""

    plans: list[ServicePlan] = field(default_factory=list)
    appliers: list[Applier] = field(default_factory=list)
    # What the registries said: rate limits by registry, those that stopped answering (cipug.lookup.ratelimits).
    lookups: LookupReport = field(default_factory=LookupReport)
    # Containers that run a tag their compose file names: (service, compose file name, drift).
    tag_drift: list[tuple[str, str, Drift]] = field(default_factory=list)
    told: bool = False

    def records(self) -> list[history.Record]:
        return [record for applier in self.appliers for record in applier.records]


def _check_notifiers(settings: Settings) -> None:
    # Before anything is touched: NOTIFY_URLS without the notify extra is one error line.
    if settings.notify_urls:
        from ..notify import check_notifiers

        check_notifiers(settings)


def _tell(settings: Settings, log: Log, facts: RunFacts, code: ExitCode) -> None:
    """The run's end: notify what is new, write the metrics. Neither changes the run's exit code."""
    facts.told = True
    if not (settings.notify_urls or settings.notify_command or settings.metrics_file):
        return
    # Loaded only when configured: the timer's run without them needs none of it.
    from ..metrics import RunStatus, entry_statuses, write_metrics

    records = facts.records()
    statuses = entry_statuses(facts.plans, records, history.read(settings.history_file, log)
                              if settings.metrics_file else records)
    if settings.notify_urls or settings.notify_command:
        from ..notify import events_from_records, events_from_statuses, events_from_tag_drift, notify_run

        now = history.now_iso()
        events = events_from_records(records) + events_from_statuses(statuses, now) + events_from_tag_drift(
            facts.tag_drift, now)
        notify_run(settings, log, events, {plan.service.name for plan in facts.plans if plan.error is None})
    if settings.metrics_file:
        services = {plan.service.name: None if plan.error is None else plan.error.message for plan in facts.plans}
        write_metrics(settings.metrics_file, RunStatus(time.time(), int(code), statuses, services, facts.lookups), log)


def _update(settings: Settings, log: Log, service_names: Iterable[str], dry_run: bool, refresh: bool,
            sleep: Callable[[float], None], clock: Callable[[], float], *,
            facts: RunFacts | None = None) -> ExitCode:
    facts = RunFacts() if facts is None else facts
    services = select_services(settings, log, service_names)
    codes: list[ExitCode] = []
    pending = intents.pending(settings.history_file.parent, log)
    if pending and not dry_run:
        repaired, broken = _repair(settings, log, pending, services, sleep, clock, facts)
        codes += repaired
        for name in sorted(broken & {service.name for service in services}):
            log.error(f"{name}: not updated: what an interrupted run left could not be repaired")
        services = [service for service in services if service.name not in broken]
    with recording() as lookups:
        plans = plan_services(settings, services, log, refresh=refresh)
    facts.plans = plans
    facts.lookups = lookups
    # Held, failed before or not due yet: those changes leave plan.changes for plan.skipped.
    screen(settings, log, plans, save_state=not dry_run)
    codes += [plan.error.code for plan in plans if plan.error is not None]
    changed = [plan for plan in plans if plan.error is None and plan.changes]
    for plan in plans:
        report_plan(plan, log, dry_run)
        for line in unpinned_images(plan, log):
            log.warning(line)
    # A service that is updated now is restarted on its new pins anyway; one postponed waits whole.
    updating = {plan.service.name for plan in changed}
    if settings.service_pull and changed:
        changed, postponed = fit_pull_budget(changed, lookups.budgets())
        for plan, why in postponed:
            log.info(f"{plan.service.name}: {'would be ' if dry_run else ''}postponed: {why}; "
                     "it is updated on a later run")
    drifted = {name: found for name, found in drift_by_service(settings, plans, log).items()
               if name not in updating}
    for plan in plans:
        for found in drifted.get(plan.service.name, []):
            if found.tag:
                # Restarting would not help: the compose file itself names a tag.
                log.warning(f"{plan.service.name}: {found.describe(plan.service.compose_file.name)}")
                facts.tag_drift.append((plan.service.name, plan.service.compose_file.name, found))
    restart = [(plan, on_digests) for plan in plans
               if (on_digests := [found for found in drifted.get(plan.service.name, []) if not found.tag])]
    if changed or restart:
        codes += _apply(settings, log, changed, restart, dry_run, sleep, clock, facts)
    return combine_codes(codes)


def fit_pull_budget(plans: Iterable[ServicePlan], budgets: Mapping[str, RateLimit]
                    ) -> tuple[list[ServicePlan], list[tuple[ServicePlan, str]]]:
    """The plans, in order, whose pulls fit what the registries said is left of their rate limits; the
    others, each with why it waits.

    A service's pull fetches every image of its compose file: each of its entries costs one pull on
    its registry. A registry that told no remaining budget holds nothing back.
    """
    left = {registry: limit.remaining for registry, limit in budgets.items() if limit.remaining is not None}
    fitting: list[ServicePlan] = []
    postponed: list[tuple[ServicePlan, str]] = []
    for plan in plans:
        needs = Counter(parse_reference(entry.reference).registry for entry in plan.entries)
        short = [(registry, count) for registry, count in sorted(needs.items())
                 if registry in left and count > left[registry]]
        if short:
            registry, count = short[0]
            postponed.append((plan, f"it needs {count} pull{'s' if count != 1 else ''} from {registry}, and the "
                                    f"rate limit leaves {left[registry]} for this run ({budgets[registry].describe()})"))
            continue
        for registry, count in needs.items():
            if registry in left:
                left[registry] -= count
        fitting.append(plan)
    return fitting, postponed


def _repair(settings: Settings, log: Log, pending: list[tuple[Path, Intent]], services: list[Service],
            sleep: Callable[[float], None], clock: Callable[[], float],
            facts: RunFacts) -> tuple[list[ExitCode], set[str]]:
    # Loaded only when an interrupted run left something: nearly never.
    from ..transaction import make_applier, repair_interrupted

    applier = make_applier(settings, log, sleep, clock)
    facts.appliers.append(applier)
    return repair_interrupted(settings, log, applier, pending, services)


def _apply(settings: Settings, log: Log, plans: list[ServicePlan], drifted: list[tuple[ServicePlan, list[Drift]]],
           dry_run: bool, sleep: Callable[[float], None], clock: Callable[[], float],
           facts: RunFacts) -> list[ExitCode]:
    # The machinery that changes services is loaded only when something changes: most runs do not.
    from ..transaction import apply_all, drift_transaction, make_applier, update_transaction

    transactions = [update_transaction(settings, plan) for plan in plans]
    transactions += [drift_transaction(settings, plan, found) for plan, found in drifted]
    if dry_run:
        for transaction in transactions:
            log.info(f"{transaction.service.name}: would {transaction.describe()}")
        return []
    applier = make_applier(settings, log, sleep, clock)
    facts.appliers.append(applier)
    try:
        codes = apply_all(settings, log, applier, transactions)
    finally:
        record_outcomes(settings, log, [transaction.service for transaction in transactions], applier.records)
    if settings.prune_images and any(record.outcome != history.FAILED for record in applier.records):
        keep = pins_to_keep(history.read(settings.history_file, log), settings.keep_images)
        for warning in applier.control.prune_images(keep):
            log.warning(warning)
    return codes
