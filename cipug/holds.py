"""Holds, failed digests and UPDATE_MIN_AGE: which of the changes found go ahead, and what cipug remembers.

The decisions are plain functions of a service's entries, the changes found, its state and the
time: `screen_service` (which changes go ahead, which are held, failed before or not due yet,
and the state this run leaves), `remember` (what an update run's outcomes add), `held` and
`released` (the `hold` and `release` commands). `screen` and `Ledger` read and write the state
file (cipug/files/state.py) around them.

- A hold (on a service, or one entry) keeps every change of it back; `check` still shows them.
- An update that was rolled back automatically (it did not restart or come up) marks its digest
  failed for that entry: later runs skip it until the tag resolves to another digest.
- With UPDATE_MIN_AGE, a new digest goes ahead only once cipug first saw it that many hours ago.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .errors import CipugError
from .files import history
from .files.state import EntryState, Failed, Hold, Seen, ServiceState, State, load, save, service_key, state_file
from .log import Log
from .plan import FAILED_BEFORE, HELD, NOT_DUE, Change, ImageEntry, ServicePlan, Skip
from .report import short_digest
from .services import Service
from .settings import Settings


def wall_clock() -> float:
    """Now, in seconds since the epoch (tests replace it)."""
    return time.time()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def now_iso() -> str:
    return iso(wall_clock())


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def hold_text(hold: Hold) -> str:
    """`held since …` and why, for one line."""
    why = [hold.reason] if hold.reason else []
    why += [f"rolled back from {short_digest(pin)}" for pin in hold.rolled_back_from.values()]
    return f"held since {hold.since}" + (f" ({'; '.join(why)})" if why else "")


def screen_service(state: ServiceState, entries: Sequence[ImageEntry], changes: Sequence[Change],
                   min_age_hours: float, now: float) -> tuple[list[Change], list[Skip], ServiceState]:
    """The changes that go ahead, those that do not and why, and the service's state after this run saw them.

    A failed mark is kept only while the tag still resolves to that digest, a first-seen time only
    while the tag resolves to that new digest; state of entries no longer in .env keeps only holds.
    """
    by_key = {change.entry.hashed_key: change for change in changes}
    keys = {entry.hashed_key for entry in entries}
    new_entries = {key: EntryState(hold=entry.hold) for key, entry in state.entries.items()
                   if key not in keys and entry.hold is not None}
    go: list[Change] = []
    skipped: list[Skip] = []
    for entry in entries:
        key = entry.hashed_key
        old = state.entry(key)
        change = by_key.get(key)
        if change is None:
            new_entries[key] = EntryState(hold=old.hold)
            continue
        failed = old.failed if old.failed is not None and old.failed.pinned == change.new else None
        seen = old.seen if old.seen is not None and old.seen.pinned == change.new else None
        hold = state.hold or old.hold
        skip: Skip | None = None
        if hold is not None:
            skip = Skip(change, HELD, hold_text(hold))
        elif failed is not None:
            skip = Skip(change, FAILED_BEFORE, f"failed before (did not come up at {failed.time}); skipped until its "
                                               "tag moves to another digest")
        elif min_age_hours > 0:
            first = epoch(seen.time) if seen is not None else now
            due = first + min_age_hours * 3600
            if now < due:
                skip = Skip(change, NOT_DUE, f"not due until {iso(due)} (first seen {iso(first)}, UPDATE_MIN_AGE "
                                             f"{min_age_hours:g} h)", iso(due))
        if skip is None:
            go.append(change)
        else:
            skipped.append(skip)
        if seen is None and (min_age_hours > 0 or skip is not None):
            seen = Seen(change.new, iso(now))
        new_entries[key] = EntryState(old.hold, failed, seen)
    after = dataclasses.replace(state, entries=dict(
        {key: value for key, value in new_entries.items() if not value.is_empty()}))
    return go, skipped, after


def _with_entry(state: State, key: str, name: str, entry: str, change: EntryState) -> State:
    service = state.service(key, name)
    entries = {**service.entries, entry: change}
    return state.with_service(key, dataclasses.replace(service, entries=dict(
        {item: value for item, value in entries.items() if not value.is_empty()})))


def remember(state: State, keys: dict[str, str], records: Iterable[history.Record]) -> State:
    """The state after an update run with these history records (`keys`: service name to state key).

    Did not come up (rolled back, or a first pin stopped): the new digest failed for that entry.
    Updated: nothing more to wait for or skip.
    """
    for record in records:
        key = keys.get(record.service)
        if key is None or not record.entry or record.new is None:
            continue
        entry = state.service(key, record.service).entry(record.entry)
        if record.did_not_come_up:
            entry = dataclasses.replace(entry, failed=Failed(record.new, record.time, record.detail))
        elif record.outcome == history.UPDATED:
            entry = dataclasses.replace(entry, failed=None, seen=None)
        else:
            continue
        state = _with_entry(state, key, record.service, record.entry, entry)
    return state


def held(state: State, key: str, name: str, hold: Hold, entry: str | None = None) -> State:
    """The state with `hold` on the service, or on one of its entries."""
    if entry is None:
        return state.with_service(key, dataclasses.replace(state.service(key, name), hold=hold))
    return _with_entry(state, key, name, entry, dataclasses.replace(state.service(key, name).entry(entry), hold=hold))


def released(state: State, key: str, name: str, entry: str | None = None) -> tuple[State, list[str]]:
    """The state without holds and failed marks on the service (every entry) or on one entry; what went."""
    service = state.service(key, name)
    gone: list[str] = []
    if entry is None and service.hold is not None:
        gone.append(f"the hold on {name} ({hold_text(service.hold)})")
        service = dataclasses.replace(service, hold=None)
    entries = dict(service.entries)
    for item, value in service.entries.items():
        if entry is not None and item != entry:
            continue
        if value.hold is not None:
            gone.append(f"the hold on {item} ({hold_text(value.hold)})")
        if value.failed is not None:
            gone.append(f"the failed digest {short_digest(value.failed.pinned)} of {item}")
        entries[item] = dataclasses.replace(value, hold=None, failed=None)
    service = dataclasses.replace(service, entries=dict(
        {item: value for item, value in entries.items() if not value.is_empty()}))
    return state.with_service(key, service), gone


class Ledger:
    """The state file around one run: what was read, what the run makes of it, and saving that."""

    def __init__(self, path: Path, before: State, state: State, keys: dict[str, str]) -> None:
        self.path, self.before, self.state, self.keys = path, before, state, keys

    def remember(self, records: Iterable[history.Record]) -> None:
        self.state = remember(self.state, self.keys, records)

    def save(self, log: Log) -> None:
        """Write what changed; a failure is a warning (the run's work is done, the next run sees it again)."""
        if self.state == self.before:
            return
        try:
            save(self.path, self.state)
        except CipugError as error:
            log.warning(f"{error.message}; holds and failed digests stay as they were")
            return
        self.before = self.state


def state_path(settings: Settings) -> Path:
    return state_file(settings.history_file.parent)


def screen(settings: Settings, log: Log, plans: Sequence[ServicePlan], *, save_state: bool = True) -> Ledger:
    """Hold back the changes of `plans` that must not go ahead (into `plan.skipped`) and say so in `plan.hold`;
    the state file's ledger, saved when `save_state` and something changed."""
    path = state_path(settings)
    before = load(path, log)
    state = before
    keys: dict[str, str] = {}
    now = wall_clock()
    for plan in plans:
        key = service_key(plan.service.folder)
        keys[plan.service.name] = key
        service = before.service(key, plan.service.name)
        if service.hold is not None:
            plan.hold = hold_text(service.hold)
        if plan.error is not None:
            continue
        plan.changes, plan.skipped, service = screen_service(service, plan.entries, plan.changes,
                                                             settings.update_min_age, now)
        state = state.with_service(key, service)
    ledger = Ledger(path, before, state, keys)
    if save_state:
        ledger.save(log)
    return ledger


def record_outcomes(settings: Settings, log: Log, services: Iterable[Service], records: Iterable[history.Record]) -> None:
    """After an update run's transactions: remember their digests that were rolled back, forget what took effect."""
    keys = {service.name: service_key(service.folder) for service in services}
    path = state_path(settings)
    before = load(path, log)
    Ledger(path, before, remember(before, keys, records), keys).save(log)
