"""The history of changes cipug made: JSON lines, appended by every update run."""

from __future__ import annotations

import json
import os
import time
from collections import namedtuple

from .log import Log

UPDATED, ROLLED_BACK, FAILED = "updated", "rolled back", "failed"


# One change to one image entry: `old`/`new` are pinned references, `snapshot` the snapper snapshot
# taken before it (None without one), `outcome` UPDATED, ROLLED_BACK or FAILED.
Record = namedtuple("Record", "time service entry tagged old new snapshot snapper_config outcome detail",
                    defaults=("",))


def now_iso() -> str:
    # time, not datetime: datetime would add to every timer run's start-up.
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def append(path: str, records: list[Record], log: Log) -> None:
    """Append records; history is a record of what happened, so failing to write it only warns."""
    if not records:
        return
    data = "".join(json.dumps(record._asdict(), sort_keys=True) + "\n" for record in records).encode()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        log.warning(f"history file {path} could not be written: {error.strerror}")


def read(path: str, log: Log) -> list[Record]:
    """Every readable record; a damaged line is skipped with a warning."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as error:
        log.warning(f"history file {path} cannot be read: {error.strerror}")
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(Record(**json.loads(line)))
        except (ValueError, TypeError):
            log.warning(f"{path}:{number}: damaged history line skipped")
    return records
