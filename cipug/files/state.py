"""cipug's state file: holds, digests that failed, and when a new digest was first seen.

One JSON object in the state directory next to history (`state.json`), one entry per service
folder. Written atomically and privately (files/trusted.py), read only when nobody else could
have written it; a damaged part is a warning and left out, never fatal. The decisions made from
it are in cipug/holds.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Mapping

from ..errors import CipugError, ExitCode
from ..log import Log
from ..lookup.references import is_valid_digest
from .trusted import Untrusted, read_trusted, write_private

FILE_NAME = "state.json"
VERSION = 1


@dataclass(frozen=True)
class Hold:
    """A hold on a service or one entry: update runs check it but change nothing."""

    since: str
    reason: str = ""
    # A hold `cipug rollback` set: the pinned reference each entry was rolled back from.
    rolled_back_from: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """A pinned reference an update was rolled back from (it did not restart or come up)."""

    pinned: str
    time: str
    detail: str = ""


@dataclass(frozen=True)
class Seen:
    """When cipug first saw the entry's tag resolve to `pinned` (for UPDATE_MIN_AGE)."""

    pinned: str
    time: str


@dataclass(frozen=True)
class EntryState:
    hold: Hold | None = None
    failed: Failed | None = None
    seen: Seen | None = None

    def is_empty(self) -> bool:
        return self.hold is None and self.failed is None and self.seen is None


@dataclass(frozen=True)
class ServiceState:
    name: str
    hold: Hold | None = None
    # By HASHED key.
    entries: Mapping[str, EntryState] = field(default_factory=dict)

    def entry(self, key: str) -> EntryState:
        return self.entries.get(key, EntryState())

    def is_empty(self) -> bool:
        return self.hold is None and all(entry.is_empty() for entry in self.entries.values())


@dataclass(frozen=True)
class State:
    # By service folder (resolved path as text).
    services: Mapping[str, ServiceState] = field(default_factory=dict)

    def service(self, key: str, name: str) -> ServiceState:
        return self.services.get(key) or ServiceState(name)

    def with_service(self, key: str, service: ServiceState) -> State:
        """This state with `service` in place of what it held for `key` (dropped when empty)."""
        services = {name: value for name, value in self.services.items() if name != key}
        if not service.is_empty():
            services[key] = service
        return State(dict(dict(sorted(services.items()))))


def state_file(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def service_key(folder: Path) -> str:
    """How the state file names a service folder: a timer and a shell reaching it by other paths agree."""
    return str(folder.resolve())


def load(path: Path, log: Log) -> State:
    """The state in `path`; empty when there is none. Anything damaged or untrusted is a warning and left out."""
    try:
        data = read_trusted(path)
    except Untrusted as problem:
        log.warning(f"ignoring the state file {path} (holds, failed digests, first-seen times): {problem}")
        return State()
    if data is None:
        return State()
    try:
        document = json.loads(data.decode("utf-8"))
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise ValueError(f"not a state file cipug writes (version {VERSION})")
        raw_services = document.get("services")
        if not isinstance(raw_services, dict):
            raise ValueError("no `services` object")
    except (UnicodeDecodeError, ValueError) as error:
        log.warning(f"ignoring the state file {path} (holds, failed digests, first-seen times): {error}")
        return State()
    services = {}
    for key, raw in raw_services.items():
        try:
            services[key] = _service(raw)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            log.warning(f"{path}: ignoring the damaged state of {key}: {type(error).__name__}: {error}")
    return State(dict(services))


def save(path: Path, state: State) -> None:
    """Write the state; CipugError (STATE_WRITE_FAILED) when it cannot be."""
    document = {"version": VERSION, "services": {key: _plain(asdict(service)) for key, service in state.services.items()}}
    try:
        write_private(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    except (OSError, Untrusted) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise CipugError(f"cannot write the state file {path}: {reason}", ExitCode.STATE_WRITE_FAILED) from None
    except CipugError as error:
        raise CipugError(error.message, ExitCode.STATE_WRITE_FAILED) from None


def _plain(value: object) -> object:
    """asdict's output with mappings as plain dicts and empty parts left out."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items() if item not in (None, "", {})}
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def _time(value: object, what: str) -> str:
    text = _text(value, what)
    if datetime.fromisoformat(text).tzinfo is None:
        raise ValueError(f"{what} {text!r} has no time zone")
    return text


def _pinned(value: object, what: str) -> str:
    text = _text(value, what)
    name, _, digest = text.rpartition("@")
    if not name or not is_valid_digest(digest):
        raise ValueError(f"{what} {text!r} is not a pinned reference")
    return text


def _hold(raw: object) -> Hold | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("a hold is not an object")
    rolled = raw.get("rolled_back_from", {})
    if not isinstance(rolled, dict):
        raise ValueError("rolled_back_from is not an object")
    return Hold(_time(raw["since"], "since"), _text(raw.get("reason", ""), "reason"),
                dict({_text(key, "an entry"): _pinned(pin, "rolled_back_from") for key, pin in rolled.items()}))


def _entry(raw: object) -> EntryState:
    if not isinstance(raw, dict):
        raise ValueError("an entry is not an object")
    failed = raw.get("failed")
    seen = raw.get("seen")
    if failed is not None and not isinstance(failed, dict) or seen is not None and not isinstance(seen, dict):
        raise ValueError("failed/seen is not an object")
    return EntryState(
        _hold(raw.get("hold")),
        None if failed is None else Failed(_pinned(failed["pinned"], "failed"), _time(failed["time"], "time"),
                                           _text(failed.get("detail", ""), "detail")),
        None if seen is None else Seen(_pinned(seen["pinned"], "seen"), _time(seen["time"], "time")),
    )


def _service(raw: object) -> ServiceState:
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    entries = raw.get("entries", {})
    if not isinstance(entries, dict):
        raise ValueError("entries is not an object")
    return ServiceState(_text(raw["name"], "name"), _hold(raw.get("hold")),
                        dict({_text(key, "an entry"): _entry(value) for key, value in entries.items()}))
