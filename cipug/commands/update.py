"""`cipug update` (and the timer's run without arguments): pin and apply every tag that moved."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..errors import ExitCode, combine_codes
from ..files import history
from ..files.lock import run_lock
from ..log import Log
from ..plan import ServicePlan, plan_services
from ..report import report_plan
from ..services import select_services
from ..settings import Settings


def run_update(settings: Settings, log: Log, *, service_names: Iterable[str] = (), dry_run: bool = False,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> ExitCode:
    """The whole update run; the exit code."""
    # A dry run changes nothing, so it must not hold off the timer's run with the lock.
    if dry_run:
        return _update(settings, log, service_names, dry_run, sleep, clock)
    with run_lock(settings):
        return _update(settings, log, service_names, dry_run, sleep, clock)


def _update(settings: Settings, log: Log, service_names: Iterable[str], dry_run: bool,
            sleep: Callable[[float], None], clock: Callable[[], float]) -> ExitCode:
    plans = plan_services(settings, select_services(settings, log, service_names), log)
    codes = [plan.error.code for plan in plans if plan.error is not None]
    changed = [plan for plan in plans if plan.error is None and plan.changes]
    for plan in plans:
        report_plan(plan, log, dry_run)
    if changed:
        codes += _apply(settings, log, changed, dry_run, sleep, clock)
    return combine_codes(codes)


def _apply(settings: Settings, log: Log, plans: list[ServicePlan], dry_run: bool,
           sleep: Callable[[float], None], clock: Callable[[], float]) -> list[ExitCode]:
    # The machinery that changes services is loaded only when something changes: most runs do not.
    from ..programs.compose import ServiceControl
    from ..programs.process import Runner
    from ..programs.snapper import Snapper
    from ..programs.tools import change_tools, require_tools
    from ..transaction import Applier, apply_all, update_transaction

    transactions = [update_transaction(settings, plan) for plan in plans]
    if dry_run:
        for transaction in transactions:
            log.info(f"{transaction.service.name}: would {transaction.describe()}")
        return []
    require_tools(change_tools(settings))
    runner = Runner(log)
    control = ServiceControl(settings, runner, sleep=sleep, clock=clock)
    applier = Applier(settings, log, control, Snapper(settings.snapper_tool, runner))
    codes = apply_all(settings, log, applier, transactions)
    if settings.prune_images and any(record.outcome != history.FAILED for record in applier.records):
        warning = control.prune_images()
        if warning:
            log.warning(warning)
    return codes
