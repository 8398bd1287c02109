"""`cipug check`: which services have updates, changing nothing; fit for monitoring."""

from __future__ import annotations

import json

from ..errors import ExitCode, combine_codes
from ..log import Log
from ..plan import ServicePlan, plan_services
from ..report import report_plan
from ..services import select_services
from ..settings import Settings


def check_json(plan: ServicePlan) -> dict[str, object]:
    """One service as `check --json` prints it."""
    available = {change.entry.hashed_key: change.new for change in plan.changes}
    status = "error" if plan.error else "pending" if plan.changes else "current"
    return {
        "service": plan.service.name,
        "status": status,
        "error": {"message": plan.error.message, "code": int(plan.error.code)} if plan.error else None,
        "entries": [{
            "entry": entry.hashed_key,
            "tagged": entry.reference,
            "current": entry.current,
            # Unknown when the service could not be resolved.
            "available": None if plan.error else available.get(entry.hashed_key, entry.current),
            "pending": None if plan.error else entry.hashed_key in available,
        } for entry in plan.entries],
    }


def run_check(settings: Settings, log: Log, *, json_output: bool = False, refresh: bool = False) -> ExitCode:
    """Report pending updates; 0 when every image is current, 1 when some are pending, else the error.

    `refresh` asks the registries even where the cache says an image is current.
    """
    plans = plan_services(settings, select_services(settings, log), log, refresh=refresh)
    if json_output:
        for plan in plans:
            if plan.error is not None:
                log.error(f"{plan.service.name}: {plan.error.message}")
        print(json.dumps([check_json(plan) for plan in plans], indent=2))
    else:
        for plan in plans:
            report_plan(plan, log, dry_run=True)
    failures = [plan.error.code for plan in plans if plan.error is not None]
    if failures:
        return combine_codes(failures)
    pending = [plan.service.name for plan in plans if plan.changes]
    if not json_output:
        log.info(f"updates pending: {', '.join(pending)}" if pending else "every image is current")
    return ExitCode.UPDATES_PENDING if pending else ExitCode.OK
