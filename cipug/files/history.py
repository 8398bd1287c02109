"""The history of changes cipug made: JSON lines, appended by every run that changes a service."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ..log import Log

UPDATED, ROLLED_BACK, FAILED = "updated", "rolled back", "failed"
# A service whose containers ran other images than its pins, restarted on them.
REPAIRED = "repaired"


class Record(NamedTuple):
    """One change to one image entry: `old`/`new` are pinned references, `snapshot` the snapper
    snapshot taken before it (None without one), `outcome` UPDATED, ROLLED_BACK, FAILED or REPAIRED."""

    time: str
    service: str
    entry: str
    tagged: str
    old: str | None
    new: str | None
    snapshot: int | None
    snapper_config: str | None
    outcome: str
    detail: str = ""
    # The images' versions (OCI version label, else build time), where cipug could read them.
    old_version: str | None = None
    new_version: str | None = None
    # The update's new images did not start or come up (rolled back, or stopped when there was nothing to go back to).
    did_not_come_up: bool = False


def known_versions(records: Iterable[Record]) -> dict[str, str]:
    """Pinned reference → the version history last recorded for it (a digest's image never changes)."""
    versions: dict[str, str] = {}
    for record in records:
        for pinned, version in ((record.old, record.old_version), (record.new, record.new_version)):
            if pinned and version:
                versions[pinned] = version
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append(path: Path, records: list[Record], log: Log) -> None:
    """Append records; history is a record of what happened, so failing to write it only warns."""
    if not records:
        return
    data = "".join(json.dumps(record._asdict(), sort_keys=True) + "\n" for record in records).encode()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        log.warning(f"history file {path} could not be written: {error.strerror}")


def read(path: Path, log: Log) -> list[Record]:
    """Every readable record; a damaged line is skipped with a warning."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
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
