"""`cipug check`: which services have updates, changing nothing; fit for monitoring."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from ..drift import Drift, drift_by_service
from ..errors import CipugError, ExitCode, combine_codes
from ..files import history
from ..log import Log
from ..lookup.ratelimits import LookupReport
from ..lookup.references import parse_reference
from ..lookup.resolve import recording
from ..holds import screen
from ..plan import ServicePlan, plan_services
from ..programs.containers import image_versions
from ..programs.process import Runner
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


def versions_of(settings: Settings, log: Log, plans: Sequence[ServicePlan]) -> dict[str, str]:
    """The versions of the pins the services run and of the digests their tags moved to (pinned reference →
    version): what history knows; with CHECK_VERSIONS also the pins' from their local images (free) and
    the moved digests' from the registry (a manifest GET each, which Docker Hub counts as a pull)."""
    current = [entry.current for plan in plans if plan.error is None for entry in plan.entries if entry.current]
    moved = [change.new for plan in plans for change in [*plan.changes, *(skip.change for skip in plan.skipped)]]
    if not current and not moved:
        return {}
    versions = history.known_versions(history.read(settings.history_file, log))
    if not settings.check_versions:
        return versions
    unknown = [pinned for pinned in current if pinned not in versions]
    if unknown:
        try:
            versions.update(image_versions(settings, Runner(log), unknown))
        except CipugError as error:
            log.verbose(f"the versions of the pinned images are not known: {error.message}")
    unknown = [pinned for pinned in moved if pinned not in versions]
    if unknown:
        # Loaded only when a tag moved: it reads manifests and configs, not just digests.
        from ..lookup.versions import registry_versions

        versions.update(registry_versions(settings, log, unknown))
    return versions


def check_json(plan: ServicePlan, drift: list[Drift], lookups: LookupReport | None = None,
               versions: Mapping[str, str] | None = None) -> dict[str, object]:
    """One service as `check --json` prints it."""
    versions = versions or {}
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
            "current_version": versions.get(entry.current or ""),
            # Unknown when the service could not be resolved.
            "available": None if plan.error else available.get(entry.hashed_key, entry.current),
            "available_version": None if plan.error else versions.get(available.get(entry.hashed_key,
                                                                                    entry.current or "") or ""),
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
    versions = versions_of(settings, log, plans)
    if json_output:
        for plan in plans:
            if plan.error is not None:
                log.error(f"{plan.service.name}: {plan.error.message}")
        print(json.dumps([check_json(plan, drift.get(plan.service.name, []), lookups, versions) for plan in plans],
                         indent=2))
    else:
        for plan in plans:
            report_plan(plan, log, dry_run=True, versions=versions)
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
