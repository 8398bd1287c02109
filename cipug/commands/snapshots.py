"""`cipug check-snapshots` (and --check-snapshots): is the newest snapper/btrbk snapshot of each service recent enough?

Decisions (reading a snapshot's time, picking the newest, judging its age)
are plain functions; only `check_snapshots` and its helpers touch the disk.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import ExitCode
from ..log import Log
from ..services import Service
from ..settings import Settings

SNAPPER, BTRBK = "snapper", "btrbk"

# btrbk's timestamp_format: short YYYYMMDD, long YYYYMMDDThhmm, long-iso YYYYMMDDThhmmss+hhmm
# (btrbk also reads a Z zone; seconds without a zone are read as local time, like long);
# each may end in _N when a name was taken already.
_BTRBK_NAME = re.compile(
    r".+\.(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})"
    r"(?:T(?P<hour>[0-9]{2})(?P<minute>[0-9]{2})(?:(?P<second>[0-9]{2})(?P<zone>Z|[+-][0-9]{4})?)?)?"
    r"(?:_(?P<counter>[0-9]+))?"
)
_SNAPPER_NUMBER = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Snapshot:
    label: str  # snapper's number, or btrbk's entry name
    taken: datetime  # aware, or naive for local time


def parse_btrbk_name(name: str) -> tuple[datetime, int] | None:
    """The time in a btrbk snapshot name and its _N counter; None for any other name.

    Without a zone the time is local, as btrbk writes it: the datetime is naive.
    """
    match = _BTRBK_NAME.fullmatch(name)
    if match is None:
        return None
    zone = match["zone"]
    try:
        if zone is None:
            tzinfo = None
        elif zone == "Z":
            tzinfo = timezone.utc
        else:
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
            tzinfo = timezone(-offset if zone[0] == "-" else offset)
        taken = datetime(
            int(match["year"]), int(match["month"]), int(match["day"]),
            int(match["hour"] or 0), int(match["minute"] or 0), int(match["second"] or 0),
            tzinfo=tzinfo,
        )
        # Comparing ages needs it; a local time in year 1 has none.
        taken.timestamp()
    except (ValueError, OverflowError):
        # Looks like a timestamp but is no date (month 13, zone +2500): btrbk ignores these too.
        return None
    return taken, int(match["counter"] or 0)


def parse_snapper_info(xml: bytes) -> datetime | None:
    """The UTC <date> of a snapper info.xml; None when it cannot be read."""
    try:
        text = ElementTree.fromstring(xml).findtext("date")
        return datetime.strptime((text or "").strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except (ElementTree.ParseError, ValueError):
        return None


def newest_btrbk(names: Iterable[str]) -> Snapshot | None:
    """The entry whose name holds the latest time (then the highest _N); None when none has one."""
    found = [(parsed, name) for name in names if (parsed := parse_btrbk_name(name)) is not None]
    if not found:
        return None
    (taken, _), name = max(found, key=lambda item: (item[0][0].timestamp(), item[0][1]))
    return Snapshot(name, taken)


def newest_snapper(names: Iterable[str], read_date: Callable[[int], datetime | None]) -> Snapshot | None:
    """The highest-numbered snapshot whose info.xml `read_date` can read.

    Only reads info.xml files down from the top until one works, as a service
    may keep hundreds of snapshots.
    """
    numbers = sorted((int(name) for name in names if _SNAPPER_NUMBER.fullmatch(name)), reverse=True)
    for number in numbers:
        taken = read_date(number)
        if taken is not None:
            return Snapshot(str(number), taken)
    return None


def age_hours(taken: datetime, now: float) -> float:
    # A naive datetime's timestamp() reads it as local time.
    return (now - taken.timestamp()) / 3600


def format_age(age: float, max_hours: float) -> str:
    """`age` with the fewest decimals (at least one) at which it still compares with the max as it really does.

    Rounded to one decimal, 0.0004 h over a max of 0.0001 h would read "0.0 h, more than the max".
    """
    for decimals in range(1, 16):
        text = f"{age:.{decimals}f}"
        if (float(text) > max_hours) == (age > max_hours):
            return text
    return repr(age)


@dataclass(frozen=True)
class Verdict:
    """Whether a service's newest snapshot is recent enough, its age in hours (None: no snapshot), the line to print."""

    fresh: bool
    age: float | None
    line: str


def judge(service: str, kind: str, folder: Path, newest: Snapshot | None, max_hours: float, now: float) -> Verdict:
    """Judge the newest snapshot's age against the max (an age equal to the max is recent enough)."""
    if newest is None:
        return Verdict(False, None, f"{service}: no {kind} snapshot in {folder} (max age {max_hours:g} h)")
    age = age_hours(newest.taken, now)
    shown = format_age(age, max_hours)
    if age > max_hours:
        return Verdict(False, age, f"{service}: newest {kind} snapshot {newest.label} in {folder} is {shown} h old,"
                                   f" more than the max {max_hours:g} h")
    return Verdict(True, age, f"{service}: newest {kind} snapshot {newest.label} is {shown} h old "
                              f"(max {max_hours:g} h)")


def _subfolders(folder: Path) -> list[str]:
    """Names of the folders (snapshot subvolumes) in `folder`; OSError when it cannot be listed."""
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]


def _snapper_reader(service: str, folder: Path, log: Log) -> Callable[[int], datetime | None]:
    def read_date(number: int) -> datetime | None:
        info = folder / str(number) / "info.xml"
        try:
            taken = parse_snapper_info(info.read_bytes())
        except OSError as error:
            log.verbose(f"{service}: skipping snapper snapshot {number}: {info} cannot be read: {error.strerror}")
            return None
        if taken is None:
            log.verbose(f"{service}: skipping snapper snapshot {number}: {info} is unreadable (no valid <date>)")
        return taken

    return read_date


def _check_one(service: Service, kind: str, relative: str, max_hours: float, log: Log, now: float) -> bool:
    folder = service.folder / relative
    try:
        names = _subfolders(folder)
    except FileNotFoundError:
        log.error(f"{service.name}: {kind} snapshot folder {folder} does not exist (max age {max_hours:g} h)")
        return False
    except OSError as error:
        log.error(
            f"{service.name}: {kind} snapshot folder {folder} cannot be read: {error.strerror} (max age {max_hours:g} h)"
        )
        return False
    if kind == SNAPPER:
        newest = newest_snapper(names, _snapper_reader(service.name, folder, log))
    else:
        newest = newest_btrbk(names)
    verdict = judge(service.name, kind, folder, newest, max_hours, now)
    if verdict.fresh:
        log.success(verdict.line)
    else:
        log.error(verdict.line)
    return verdict.fresh


def check_snapshots(settings: Settings, services: list[Service], log: Log, now: float) -> ExitCode:
    """Check every service's newest snapshots; SNAPSHOTS_STALE when any is missing or too old."""
    kinds = [
        (kind, relative, max_hours)
        for kind, relative, max_hours in (
            (SNAPPER, settings.snapshots_dir_snapper, settings.snapshots_max_age_snapper),
            (BTRBK, settings.snapshots_dir_btrbk, settings.snapshots_max_age_btrbk),
        )
        if relative
    ]
    if not kinds:
        log.error(
            "--check-snapshots needs to know where the snapshots are: set SNAPSHOTS_DIR_SNAPPER and/or "
            "SNAPSHOTS_DIR_BTRBK (e.g. CIPUG_SNAPSHOTS_DIR_SNAPPER=.snapshots)"
        )
        return ExitCode.INVALID_VALUE
    results = [
        _check_one(service, kind, relative, max_hours, log, now)
        for service in services
        for kind, relative, max_hours in kinds
    ]
    return ExitCode.OK if all(results) else ExitCode.SNAPSHOTS_STALE
