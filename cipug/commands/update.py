"""`cipug update` (and the timer's run without arguments): pin and apply every tag that moved."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import ExitCode, combine_codes
from ..files import history, intents
from ..files.intents import Intent
from ..files.lock import run_lock
from ..log import Log
from ..plan import ServicePlan, plan_services
from ..report import report_plan
from ..services import Service, select_services
from ..settings import Settings


def run_update(settings: Settings, log: Log, *, service_names: Iterable[str] = (), dry_run: bool = False,
               refresh: bool = False, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> ExitCode:
    """The whole update run; the exit code. `refresh` looks every tag up, whatever the cache holds."""
    # A dry run changes nothing, so it must not hold off the timer's run with the lock.
    if dry_run:
        return _update(settings, log, service_names, dry_run, refresh, sleep, clock)
    with run_lock(settings):
        return _update(settings, log, service_names, dry_run, refresh, sleep, clock)


def _update(settings: Settings, log: Log, service_names: Iterable[str], dry_run: bool, refresh: bool,
            sleep: Callable[[float], None], clock: Callable[[], float]) -> ExitCode:
    services = select_services(settings, log, service_names)
    codes: list[ExitCode] = []
    pending = intents.pending(settings.history_file.parent, log)
    if pending and not dry_run:
        repaired, broken = _repair(settings, log, pending, services, sleep, clock)
        codes += repaired
        for name in sorted(broken & {service.name for service in services}):
            log.error(f"{name}: not updated: what an interrupted run left could not be repaired")
        services = [service for service in services if service.name not in broken]
    plans = plan_services(settings, services, log, refresh=refresh)
    codes += [plan.error.code for plan in plans if plan.error is not None]
    changed = [plan for plan in plans if plan.error is None and plan.changes]
    for plan in plans:
        report_plan(plan, log, dry_run)
    if changed:
        codes += _apply(settings, log, changed, dry_run, sleep, clock)
    return combine_codes(codes)


def _repair(settings: Settings, log: Log, pending: list[tuple[Path, Intent]], services: list[Service],
            sleep: Callable[[float], None], clock: Callable[[], float]) -> tuple[list[ExitCode], set[str]]:
    # Loaded only when an interrupted run left something: nearly never.
    from ..transaction import make_applier, repair_interrupted

    return repair_interrupted(settings, log, make_applier(settings, log, sleep, clock), pending, services)


def _apply(settings: Settings, log: Log, plans: list[ServicePlan], dry_run: bool,
           sleep: Callable[[float], None], clock: Callable[[], float]) -> list[ExitCode]:
    # The machinery that changes services is loaded only when something changes: most runs do not.
    from ..transaction import apply_all, make_applier, update_transaction

    transactions = [update_transaction(settings, plan) for plan in plans]
    if dry_run:
        for transaction in transactions:
            log.info(f"{transaction.service.name}: would {transaction.describe()}")
        return []
    applier = make_applier(settings, log, sleep, clock)
    codes = apply_all(settings, log, applier, transactions)
    if settings.prune_images and any(record.outcome != history.FAILED for record in applier.records):
        warning = applier.control.prune_images()
        if warning:
            log.warning(warning)
    return codes
