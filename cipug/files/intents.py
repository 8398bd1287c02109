"""Intent records: what a transaction is changing in a service, kept until the service is whole again.

A record is written (atomically, privately, in the state directory next to history) before a
transaction changes a service's .env or containers, updated when it starts on the containers,
and removed once the transaction has ended, done or put back. A record that is still there
means a run was killed part-way (kill -9, power loss): the next run finds it before anything
else and repairs the service (cipug.recovery).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..envfile import Previous
from ..errors import CipugError, ExitCode
from ..log import Log
from .trusted import Untrusted, read_trusted, write_private

FOLDER = "intents"
# The stages a record goes through; a repair undoes what its stage says may have happened.
PINS, CONTAINERS, RESTORE = "pins", "containers", "restore"
_STAGES = (PINS, CONTAINERS, RESTORE)


@dataclass(frozen=True)
class PinIntent:
    """One pin a transaction writes: `new` over `old`, and how the line stood before (`previous`)."""

    entry: str
    tagged: str
    old: str | None
    new: str
    previous: Previous


@dataclass(frozen=True)
class Intent:
    service: str
    folder: str
    # The transaction's Kind value.
    kind: str
    started: str
    pins: tuple[PinIntent, ...]
    snapshot: int | None
    snapper_config: str | None
    # The snapshot a folder rollback brings the folder back to.
    restore: int | None
    stage: str

    def at(self, stage: str) -> Intent:
        return replace(self, stage=stage)


def intent_path(state_dir: Path, folder: Path) -> Path:
    """One record per service folder; the hash keeps two services roots with the same names apart."""
    digest = hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:16]
    return state_dir / FOLDER / f"{folder.name}-{digest}.json"


def save(path: Path, intent: Intent) -> None:
    """Write the record; a transaction that cannot leave one behind must not start (CipugError)."""
    try:
        write_private(path, json.dumps(asdict(intent), indent=2) + "\n")
    except (OSError, Untrusted) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise CipugError(f"cannot write the intent record {path}: {reason}; nothing was changed",
                         ExitCode.ENV_WRITE_FAILED) from None


def remove(path: Path, log: Log) -> None:
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        # The next run would repair a service that is whole: it puts back nothing it did not write.
        log.warning(f"intent record {path} could not be removed: {error.strerror}")


def pending(state_dir: Path, log: Log) -> list[tuple[Path, Intent]]:
    """Every record left behind, oldest first; a damaged or untrusted one is a warning and skipped."""
    folder = state_dir / FOLDER
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError as error:
        log.warning(f"intent records in {folder} cannot be listed: {error.strerror}")
        return []
    found = []
    for path in paths:
        try:
            data = read_trusted(path)
            if data is not None:
                found.append((path, parse(data)))
        except (Untrusted, ValueError) as problem:
            log.warning(f"ignoring intent record {path}: {problem}")
    return sorted(found, key=lambda item: item[1].started)


def parse(data: bytes) -> Intent:
    """An intent record from its file; ValueError says what is wrong with it."""
    try:
        document = json.loads(data.decode("utf-8"))
        pins = tuple(PinIntent(pin["entry"], pin["tagged"], pin["old"], pin["new"], Previous(*pin["previous"]))
                     for pin in document.pop("pins"))
        intent = Intent(pins=pins, **document)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not an intent record cipug writes ({type(error).__name__}: {error})") from None
    if (intent.stage not in _STAGES or not isinstance(intent.folder, str) or not isinstance(intent.service, str)
            or not all(isinstance(pin.new, str) and isinstance(pin.entry, str) for pin in intent.pins)):
        raise ValueError("not an intent record cipug writes (a field of the wrong kind)")
    return intent

