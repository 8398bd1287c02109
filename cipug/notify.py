"""Notifications: one per event, sent to Apprise URLs (`NOTIFY_URLS`) and a program (`NOTIFY_COMMAND`).

Updated, rolled back and failed happen once by nature: each is told once, from this run's history
records. Held, skipped because it failed before, and drift are states that last over runs: each is
told when it first appears, and again only after it cleared; what was told is kept in
`notified.json` next to the history file. Which events are new is a plain function
(`to_notify`); sending sits at the edge. A notifier that fails or takes longer than
`NOTIFY_TIMEOUT` is a warning and never changes the run's outcome. Apprise is imported only
when `NOTIFY_URLS` is set.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .errors import CipugError, ExitCode
from .files import history
from .files.trusted import Untrusted, read_trusted, write_private
from .log import Log
from .drift import Drift
from .metrics import EntryStatus
from .programs.process import Runner, describe, last_line
from .report import short_digest
from .settings import Settings

UPDATED, ROLLED_BACK, FAILED = history.UPDATED, history.ROLLED_BACK, history.FAILED
SKIPPED, HELD, DRIFT = "skipped", "held", "drift"
# History outcomes that are told as another event: a service restarted on its pins had drifted.
_KIND_OF_OUTCOME = {"repaired": DRIFT}

STATE_FILE_NAME = "notified.json"
_STATE_VERSION = 1


class EntryChange(NamedTuple):
    """One image entry an event is about: `old`/`new` pinned references (None: none), and their versions
    where known."""

    entry: str
    tagged: str
    old: str | None
    new: str | None
    old_version: str | None = None
    new_version: str | None = None


@dataclass(frozen=True)
class Event:
    """Something to tell. `key` identifies a lasting state (held, skipped, drift): such an event is
    told once until the state clears; None for what happens once (updated, rolled back, failed)."""

    kind: str
    service: str
    time: str
    entries: tuple[EntryChange, ...] = ()
    detail: str = ""
    snapshot: int | None = None
    snapper_config: str | None = None
    key: str | None = None

    def title(self, host: str) -> str:
        return f"cipug on {host}: {self.service} {self.kind}"

    def message(self) -> str:
        """The event as a few lines of plain text."""
        lines = []
        for change in self.entries:
            if self.kind in (HELD, SKIPPED, DRIFT):
                lines.append(f"{change.entry} ({change.tagged}): {short_digest(change.new or change.old)}")
            else:
                digests = f"{short_digest(change.old)} → {short_digest(change.new)}"
                if change.old_version or change.new_version:
                    digests = f"{change.old_version or '?'} → {change.new_version or '?'} ({digests})"
                lines.append(f"{change.entry} ({change.tagged}): {digests}")
        if self.detail:
            lines.append(self.detail)
        if self.snapshot is not None:
            lines.append(f"snapshot {self.snapshot}" + (f" of snapper config {self.snapper_config}"
                                                         if self.snapper_config else ""))
        return "\n".join(lines) or f"{self.service}: {self.kind}"

    def as_json(self, host: str) -> dict[str, Any]:
        """What NOTIFY_COMMAND gets, one object per event on one line."""
        return {
            "event": self.kind, "service": self.service, "time": self.time, "host": host,
            "title": self.title(host), "message": self.message(), "detail": self.detail,
            "snapshot": self.snapshot, "snapper_config": self.snapper_config,
            "entries": [change._asdict() for change in self.entries],
        }


def state_key(kind: str, service: str, entry: str, identity: str) -> str:
    """The key of a lasting state: its kind, service, entry and what it is about (a digest, a container)."""
    return json.dumps([kind, service, entry, identity])


def _service_of(key: str) -> str | None:
    try:
        value = json.loads(key)
    except ValueError:
        return None
    return value[1] if isinstance(value, list) and len(value) == 4 and isinstance(value[1], str) else None


# --- events ---------------------------------------------------------------------------------


def events_from_records(records: Iterable[history.Record]) -> list[Event]:
    """This run's history records as events: one per service transaction (records with the same
    service, outcome, time, detail and snapshot), in order. A drift repair is a lasting state."""
    groups: dict[tuple[str, str, str, str, int | None], list[history.Record]] = {}
    for record in records:
        groups.setdefault((record.service, record.outcome, record.time, record.detail, record.snapshot),
                          []).append(record)
    events = []
    for (service, outcome, time_text, detail, snapshot), group in groups.items():
        kind = _KIND_OF_OUTCOME.get(outcome, outcome)
        entries = tuple(EntryChange(record.entry, record.tagged, record.old, record.new, record.old_version,
                                    record.new_version)
                        for record in group if record.entry)
        key = None
        if kind == DRIFT:
            key = state_key(DRIFT, service, ",".join(change.entry for change in entries),
                            ",".join(str(change.old) for change in entries))
        events.append(Event(kind, service, time_text, entries, detail, snapshot, group[0].snapper_config, key))
    return events


def events_from_statuses(statuses: Iterable[EntryStatus], time_text: str) -> list[Event]:
    """The lasting states of the entries: held, and skipped because the digest failed before."""
    events = []
    for status in statuses:
        change = EntryChange(status.entry, status.tagged, status.pinned, status.available)
        if status.held is not None:
            detail = f"held: {status.held}" if status.held else "held"
            events.append(Event(HELD, status.service, time_text, (change,), detail,
                                key=state_key(HELD, status.service, status.entry,
                                              (status.available or "") if status.pending else "")))
        if status.failed is not None:
            events.append(Event(SKIPPED, status.service, time_text,
                                (change._replace(new=status.failed),),
                                f"{short_digest(status.failed)} failed before and is skipped until the tag moves on",
                                key=state_key(SKIPPED, status.service, status.entry, status.failed)))
    return events


def events_from_tag_drift(drift: Iterable[tuple[str, str, Drift]], time_text: str) -> list[Event]:
    """Containers that run a tag because their compose file does not use the pin (service, compose
    file name, drift): a lasting state, told once while the same container runs that tag."""
    return [Event(DRIFT, service, time_text, (EntryChange(found.entry.hashed_key, found.entry.reference, found.running,
                                                          found.entry.current),),
                  found.describe(compose_file),
                  key=state_key(DRIFT, service, found.entry.hashed_key, f"{found.container} {found.running}"))
            for service, compose_file, found in drift]


def to_notify(events: Sequence[Event], notified: set[str], scope: set[str]) -> tuple[list[Event], set[str]]:
    """Which events to send, and which lasting states stay told.

    Events without a key are always sent. A lasting state is sent when it is not in `notified`.
    What stays told: the states seen now that were told before, and told states of services
    outside `scope` (the services this run saw whole), whose states this run cannot know. A
    state told before and not seen now has cleared, and is told again when it comes back.
    """
    current = {event.key for event in events if event.key is not None}
    keep = (current & notified) | {key for key in notified if _service_of(key) not in scope}
    sent_keys: set[str] = set()
    send = []
    for event in events:
        if event.key is None:
            send.append(event)
        elif event.key not in notified and event.key not in sent_keys:
            sent_keys.add(event.key)
            send.append(event)
    return send, keep


# --- the state file -------------------------------------------------------------------------


def state_path(settings: Settings) -> Path:
    return settings.history_file.parent / STATE_FILE_NAME


def read_notified(path: Path, log: Log) -> set[str]:
    """The lasting states told before; a damaged or untrusted file is a warning and counts as empty."""
    try:
        data = read_trusted(path)
    except Untrusted as problem:
        log.warning(f"notification state {path} ignored: {problem}")
        return set()
    if data is None:
        return set()
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        log.warning(f"notification state {path} ignored: not valid JSON")
        return set()
    keys = value.get("notified") if isinstance(value, dict) and value.get("version") == _STATE_VERSION else None
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        log.warning(f"notification state {path} ignored: not what cipug writes")
        return set()
    return set(keys)


def write_notified(path: Path, keys: set[str], log: Log) -> None:
    text = json.dumps({"version": _STATE_VERSION, "notified": sorted(keys)}, indent=1) + "\n"
    try:
        if write_private(path, text):
            log.warning(f"notification state {path} was not cipug's own: replaced by a private file")
    except Untrusted as problem:
        log.warning(f"notification state {path} not written: {problem}")
    except CipugError as error:
        log.warning(f"notification state: {error.message}")
    except OSError as error:
        log.warning(f"notification state {path} could not be written: {error.strerror or error}")


# --- notifiers ------------------------------------------------------------------------------


class Notifier:
    """One way to tell someone; `send` returns None when delivered, else why not (one line)."""

    name = "notifier"

    def send(self, event: Event, host: str) -> str | None:
        raise NotImplementedError


class CommandNotifier(Notifier):
    """NOTIFY_COMMAND: run once per event with the event as one JSON line on standard input."""

    def __init__(self, argv: Sequence[str], runner: Runner, timeout: float) -> None:
        self.argv, self.runner, self.timeout = tuple(argv), runner, timeout
        self.name = f"NOTIFY_COMMAND `{describe(self.argv)}`"

    def send(self, event: Event, host: str) -> str | None:
        line = json.dumps(event.as_json(host), ensure_ascii=False) + "\n"
        try:
            result = self.runner.run(self.argv, timeout=self.timeout, input=line)
        except subprocess.TimeoutExpired:
            return f"did not finish within {self.timeout:g} s"
        except CipugError as error:
            return error.message
        except OSError as error:
            return f"could not be run: {error.strerror or error}"
        if result.returncode != 0:
            return f"exited {result.returncode}: {last_line(result.stderr or result.stdout)}"
        return None


def load_apprise() -> Any:
    """The apprise module; CipugError (NOTIFY_EXTRA_MISSING) naming the extra when it is not installed."""
    try:
        import apprise
    except ImportError:
        raise CipugError("NOTIFY_URLS is set, but the notify extra is not installed: pip install 'cipug[notify]' "
                         "(Apprise)", ExitCode.NOTIFY_EXTRA_MISSING) from None
    return apprise


def _scheme(url: str) -> str:
    """What may be said of an Apprise URL in a message: its scheme, never the credentials after it."""
    return url.partition("://")[0] + "://…" if "://" in url else "an URL without a scheme"


class AppriseNotifier(Notifier):
    """NOTIFY_URLS, sent with Apprise from a thread of its own, so that a hang costs at most `timeout`."""

    name = "NOTIFY_URLS"

    def __init__(self, urls: Sequence[str], timeout: float, log: Log) -> None:
        self.apprise = load_apprise()
        self.timeout = timeout
        self.target = self.apprise.Apprise()
        for number, url in enumerate(urls, 1):
            if not self.target.add(url):
                log.warning(f"NOTIFY_URLS: URL {number} ({_scheme(url)}) is not one Apprise can send to; left out")

    def send(self, event: Event, host: str) -> str | None:
        if not len(self.target):
            return "no URL Apprise can send to"
        kinds = self.apprise.NotifyType
        notify_type = {UPDATED: kinds.SUCCESS, FAILED: kinds.FAILURE, ROLLED_BACK: kinds.WARNING}.get(
            event.kind, kinds.WARNING)
        outcome: list[object] = []

        def deliver() -> None:
            try:
                with self.apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
                    delivered = self.target.notify(body=event.message(), title=event.title(host),
                                                   notify_type=notify_type)
                outcome.append(bool(delivered))
                outcome.append(captured.getvalue())
            except Exception as error:  # a plugin's bug must not end the run; it is said in one line
                outcome[:] = [False, f"{type(error).__name__}: {error}"]

        thread = threading.Thread(target=deliver, name="cipug-apprise", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            return f"did not finish within {self.timeout:g} s"
        if outcome and outcome[0] is True:
            return None
        reason = last_line(str(outcome[1])) if len(outcome) > 1 and outcome[1] else "not delivered"
        return f"not delivered to every URL: {reason}"


def make_notifiers(settings: Settings, log: Log) -> list[Notifier]:
    notifiers: list[Notifier] = []
    if settings.notify_urls:
        notifiers.append(AppriseNotifier(settings.notify_urls, settings.notify_timeout, log))
    if settings.notify_command:
        notifiers.append(CommandNotifier(settings.notify_command, Runner(log), settings.notify_timeout))
    return notifiers


def wanted(settings: Settings) -> bool:
    return bool(settings.notify_urls or settings.notify_command)


def check_notifiers(settings: Settings) -> None:
    """Before a run changes anything: the notify extra is there when NOTIFY_URLS needs it."""
    if settings.notify_urls:
        load_apprise()


def send_all(events: Sequence[Event], notifiers: Sequence[Notifier], log: Log,
             host: str | None = None) -> set[str]:
    """Send each event to each notifier; the keys of the lasting states at least one notifier took.
    A notifier that times out is not asked again in this run, so a hang costs NOTIFY_TIMEOUT once."""
    host = host or socket.gethostname()
    delivered: set[str] = set()
    stalled: set[int] = set()
    for event in events:
        for index, notifier in enumerate(notifiers):
            if index in stalled:
                continue
            problem = notifier.send(event, host)
            if problem is None:
                if event.key is not None:
                    delivered.add(event.key)
                continue
            if problem.startswith("did not finish"):
                stalled.add(index)
                problem += "; not asked again in this run"
            log.warning(f"{event.service}: {notifier.name} could not tell that it {event.kind}: {problem}")
    return delivered


def notify_run(settings: Settings, log: Log, events: Sequence[Event], scope: set[str],
               make: Callable[[Settings, Log], list[Notifier]] = make_notifiers) -> None:
    """Tell what is new among `events`, and remember the lasting states told."""
    path = state_path(settings)
    notified = read_notified(path, log)
    send, keep = to_notify(events, notified, scope)
    if send:
        log.debug("notifying: " + ", ".join(f"{event.service} {event.kind}" for event in send))
        keep |= send_all(send, make(settings, log), log)
    if keep != notified:
        write_notified(path, keep, log)
