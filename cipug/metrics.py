"""METRICS_FILE: what the last run saw, in Prometheus' text format for node_exporter's textfile collector.

The status is plain data (`EntryStatus`, `RunStatus`), the text a pure function of it (`metrics_text`);
only `write_metrics` touches the disk, atomically, so the collector never reads half a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import CipugError
from .files import history
from .files.atomic import write_atomic
from .log import Log
from .lookup.ratelimits import LookupReport
from .plan import FAILED_BEFORE, HELD, ServicePlan

# Outcomes after which an entry's pin is the record's `new`: the pin changed then.
_PIN_CHANGES = (history.UPDATED, history.ROLLED_BACK)


@dataclass(frozen=True)
class EntryStatus:
    """One image entry of a service after a run.

    `pinned` is the reference `.env` pins now, `available` what its tag resolved to (None when not
    looked up), `pending` whether the tag points elsewhere than the pin (None: unknown, the service
    could not be read or checked). `held` is the reason of a hold (None: not held), `failed` the pin
    that failed before and is skipped (None: none), `version` the version of the pinned image (None:
    unknown), `last_changed` when the pin last changed (Unix time, None: not in the history).
    """

    service: str
    entry: str
    tagged: str
    pinned: str | None
    available: str | None = None
    pending: bool | None = None
    held: str | None = None
    failed: str | None = None
    version: str | None = None
    last_changed: float | None = None


@dataclass(frozen=True)
class RunStatus:
    """A whole run: when it ended, its exit code, its entries, the services it worked on with
    their error (None when the service was read and checked without one), and what the
    registries said of their rate limits."""

    ended: float
    exit_code: int
    entries: Sequence[EntryStatus] = ()
    services: Mapping[str, str | None] = field(default_factory=dict)
    lookups: LookupReport = field(default_factory=LookupReport)


def _epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def last_changes(records: Iterable[history.Record]) -> dict[tuple[str, str], dict[str | None, float]]:
    """For each (service, entry), when each pin was last written, from history records in order.

    A record of an update put back automatically names the pin it tried as `new` too, so the time
    a pin was last written is only an answer for the pin an entry has now."""
    found: dict[tuple[str, str], dict[str | None, float]] = {}
    for record in records:
        if record.outcome not in _PIN_CHANGES or not record.entry or record.old == record.new:
            continue
        when = _epoch(record.time)
        if when is not None:
            found.setdefault((record.service, record.entry), {})[record.new] = when
    return found


def entry_statuses(plans: Iterable[ServicePlan], run_records: Iterable[history.Record],
                   all_records: Iterable[history.Record]) -> list[EntryStatus]:
    """Every entry of the plans as the run left it: `run_records` are this run's history records,
    `all_records` the whole history (for when a pin last changed, and the pins' versions). Holds and
    failed digests come from the plans' `hold` and `skipped`."""
    updated = {(record.service, record.entry): record.new for record in run_records
               if record.outcome == history.UPDATED and record.entry}
    all_records = list(all_records)
    changes = last_changes(all_records)
    versions = history.known_versions(all_records)
    statuses = []
    for plan in plans:
        name = plan.service.name
        skipped = {skip.change.entry.hashed_key: skip for skip in plan.skipped}
        available = {change.entry.hashed_key: change.new
                     for change in [*plan.changes, *(skip.change for skip in plan.skipped)]}
        for entry in plan.entries:
            key = (name, entry.hashed_key)
            pinned = updated.get(key, entry.current)
            tag_points_to = available.get(entry.hashed_key, entry.current) if plan.error is None else None
            pending = None if plan.error is not None else tag_points_to != pinned
            skip = skipped.get(entry.hashed_key)
            held = skip.detail if skip is not None and skip.reason == HELD else (plan.hold or None)
            statuses.append(EntryStatus(
                name, entry.hashed_key, entry.reference, pinned, tag_points_to, pending, held,
                failed=skip.change.new if skip is not None and skip.reason == FAILED_BEFORE else None,
                last_changed=changes.get(key, {}).get(pinned),
                version=versions.get(pinned or ""),
            ))
    return statuses


# --- the text format ----------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the text format needs it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.samples: list[str] = []

    def add(self, value: float, **labels: str) -> None:
        text = ",".join(f'{key}="{escape_label(label)}"' for key, label in labels.items())
        self.samples.append(f"{self.name}{{{text}}} {_number(value)}" if text else f"{self.name} {_number(value)}")

    def lines(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} gauge", *self.samples]


def metrics_text(run: RunStatus) -> str:
    """The run as Prometheus text (every family a gauge with HELP and TYPE, one line feed at the end)."""
    ended = _Family("cipug_run_end_timestamp_seconds", "When the last cipug run ended (Unix time).")
    ended.add(run.ended)
    code = _Family("cipug_run_exit_code", "The exit code of the last cipug run (0: success; see README).")
    code.add(run.exit_code)
    service_error = _Family("cipug_service_error",
                            "Whether the last run could not read or check the service (1) or could (0).")
    for name in sorted(run.services):
        service_error.add(1 if run.services[name] is not None else 0, service=name)
    pending = _Family("cipug_update_pending", "Whether the entry's tag points to another digest than its pin.")
    held = _Family("cipug_update_held", "Whether the entry is held: checked, but never changed by an update.")
    failed = _Family("cipug_update_failed_before",
                     "Whether the digest the tag points to failed before and is skipped until the tag moves on.")
    changed = _Family("cipug_pin_change_timestamp_seconds", "When the entry's pin last changed (Unix time).")
    info = _Family("cipug_image_info", "The image the entry pins, with its version (empty when unknown); always 1.")
    for status in sorted(run.entries, key=lambda item: (item.service, item.entry)):
        labels = {"service": status.service, "entry": status.entry}
        if status.pending is not None:
            pending.add(1 if status.pending else 0, **labels, tagged=status.tagged)
        held.add(1 if status.held is not None else 0, **labels)
        failed.add(1 if status.failed is not None else 0, **labels)
        if status.last_changed is not None:
            changed.add(status.last_changed, **labels)
        if status.pinned is not None:
            info.add(1, **labels, tagged=status.tagged, image=status.pinned, version=status.version or "")
    families = [ended, code, service_error, pending, held, failed, changed, info, *_registry_families(run.lookups)]
    return "\n".join(line for family in families for line in family.lines()) + "\n"


def _registry_families(lookups: LookupReport) -> list[_Family]:
    """The rate limits the registries told in the run (only what they sent), and those that stopped it."""
    limit = _Family("cipug_registry_rate_limit", "Pulls the registry allows per window, as it last said.")
    remaining = _Family("cipug_registry_rate_limit_remaining", "Pulls the registry said are left (the lowest seen).")
    window = _Family("cipug_registry_rate_limit_window_seconds", "The registry's rate-limit window.")
    stopped = _Family("cipug_registry_stopped",
                      "Whether the registry answered a pull-limit 429, so the rest of its tags were not checked.")
    until = _Family("cipug_registry_stopped_until_timestamp_seconds",
                    "When a registry that answered a pull-limit 429 may be asked again (Unix time), where known.")
    for registry, told in sorted(lookups.rate_limits.items()):
        for family, value in ((limit, told.limit), (remaining, told.remaining), (window, told.window)):
            if value is not None:
                family.add(value, registry=registry)
    for registry in sorted({*lookups.rate_limits, *lookups.stopped}):
        stopped.add(1 if registry in lookups.stopped else 0, registry=registry)
        when = lookups.stopped.get(registry)
        if when is not None:
            until.add(when, registry=registry)
    return [limit, remaining, window, stopped, until]


def write_metrics(path: Path, run: RunStatus, log: Log) -> None:
    """Replace the metrics file atomically (readable by others: node_exporter runs as its own user).
    A file that cannot be written is a warning: metrics report on the run, they are not part of it."""
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(path, metrics_text(run), mode=0o644)
    except CipugError as error:
        log.warning(f"metrics file: {error.message}")
    except OSError as error:
        log.warning(f"metrics file {path} could not be written: {error.strerror or error}")
