"""`cipug check`: which services have updates, changing nothing; fit for monitoring."""

from __future__ import annotations

import json
import time

from ..drift import Drift, drift_by_service
from ..errors import ExitCode, combine_codes
from ..log import Log
from ..lookup.ratelimits import LookupReport
from ..lookup.references import parse_reference
from ..lookup.resolve import recording
from ..holds import screen
from ..plan import ServicePlan, plan_services
from ..report import report_plan
from ..services import select_services
from ..settings import Settings


def rate_limits_json(plan: ServicePlan, lookups: LookupReport) -> dict[str, dict[str, object]]:
    """What the registries of the service's entries said about their rate limits in this run, by registry."""
    registries = sorted({parse_reference(entry.reference).registry for entry in plan.entries})
    result: dict[str, dict[str, object]] = {}
    for registry in registries:
        limit = lookups.rate_limits.get(registry)
        if limit is None and registry not in lookups.stopped:
            continue
        until = lookups.stopped.get(registry)
        result[registry] = {
            "limit": limit.limit if limit else None,
            "remaining": limit.remaining if limit else None,
            "window_seconds": limit.window if limit else None,
            # Set when the registry answered a pull-limit 429: nothing more was asked of it.
            "stopped": registry in lookups.stopped,
            "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until)) if until is not None else None,
        }
    return result


def check_json(plan: ServicePlan, drift: list[Drift], lookups: LookupReport | None = None) -> dict[str, object]:
    """One service as `check --json` prints it."""
    available = {change.entry.hashed_key: change.new for change in plan.changes}
    # Held, failed before or not due yet (cipug.holds): available, but not what the next run applies.
    skipped = {skip.change.entry.hashed_key: skip for skip in plan.skipped}
    available.update({key: skip.change.new for key, skip in skipped.items()})
    status = ("error" if plan.error else "pending" if plan.changes else "held" if plan.skipped
              else "drift" if drift else "current")
    return {
        "service": plan.service.name,
        "status": status,
        "held": plan.hold or None,
        "drift": [{"container": found.container, "compose_service": found.compose_service,
                   "entry": found.entry.hashed_key, "running": found.running, "pinned": found.entry.current}
                  for found in drift],
        "error": {"message": plan.error.message, "code": int(plan.error.code)} if plan.error else None,
        "rate_limits": rate_limits_json(plan, lookups or LookupReport()),
        "entries": [{
            "entry": entry.hashed_key,
            "tagged": entry.reference,
            "current": entry.current,
            # Unknown when the service could not be resolved.
            "available": None if plan.error else available.get(entry.hashed_key, entry.current),
            "pending": None if plan.error else entry.hashed_key in available and entry.hashed_key not in skipped,
            "skipped": {"reason": skipped[entry.hashed_key].reason, "detail": skipped[entry.hashed_key].detail,
                        "due": skipped[entry.hashed_key].due} if entry.hashed_key in skipped else None,
        } for entry in plan.entries],
    }


def run_check(settings: Settings, log: Log, *, json_output: bool = False, refresh: bool = False) -> ExitCode:
    """Report pending updates; 0 when every image is current, 1 when some are pending, else the error.

    `refresh` asks the registries even where the cache says an image is current.
    """
    if json_output:
        # Standard output is the JSON document alone, whatever VERBOSITY says.
        log = Log(log.verbosity, out=log.err, err=log.err)
    with recording() as lookups:
        plans = plan_services(settings, select_services(settings, log), log, refresh=refresh)
    screen(settings, log, plans, save_state=False)
    drift = drift_by_service(settings, plans, log)
    if json_output:
        for plan in plans:
            if plan.error is not None:
                log.error(f"{plan.service.name}: {plan.error.message}")
        print(json.dumps([check_json(plan, drift.get(plan.service.name, []), lookups) for plan in plans], indent=2))
    else:
        for plan in plans:
            report_plan(plan, log, dry_run=True)
            for found in drift.get(plan.service.name, []):
                log.info(f"{plan.service.name}: drift: {found.describe(plan.service.compose_file.name)}")
    failures = [plan.error.code for plan in plans if plan.error is not None]
    if failures:
        return combine_codes(failures)
    pending = [plan.service.name for plan in plans if plan.changes]
    if not json_output:
        held = [plan.service.name for plan in plans if plan.skipped]
        if held:
            log.info(f"held back (held, failed before or not due): {', '.join(held)}")
        if pending:
            log.info(f"updates pending: {', '.join(pending)}")
        elif drift:
            log.info(f"containers that do not run their pins: {', '.join(drift)}")
        elif not held:
            log.info("every image is current")
    return ExitCode.UPDATES_PENDING if pending else ExitCode.DRIFT if drift else ExitCode.OK
