import io
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cipug.errors import ExitCode
from cipug.settings import load_settings
from cipug.log import NORMAL, VERBOSE, Log
from cipug.services import Service
from cipug.commands.snapshots import (
    Snapshot,
    check_snapshots,
    judge,
    newest_btrbk,
    newest_snapper,
    parse_btrbk_name,
    parse_snapper_info,
)

UTC = timezone.utc
# 2025-07-01 12:00 UTC.
NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def berlin_time() -> Iterator[None]:
    """Local time is CEST (UTC+2) in July, so local and UTC readings of a name differ."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    time.tzset()
    yield
    patch.undo()
    time.tzset()


def info_xml(date: str, number: int = 1) -> str:
    return (
        '<?xml version="1.0"?>\n<snapshot>\n  <type>single</type>\n'
        f"  <num>{number}</num>\n  <date>{date}</date>\n  <description>cipug</description>\n</snapshot>\n"
    )


def utc_text(hours_ago: float) -> str:
    return datetime.fromtimestamp(NOW - hours_ago * 3600, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.services: list[Service] = []

    def service(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir()
        self.services.append(Service(name, folder, folder / ".env", folder / "compose.yml"))
        return folder

    def snapper(self, folder: Path, number: int, hours_ago: float | None, text: str | None = None) -> None:
        snapshot = folder / ".snapshots" / str(number)
        snapshot.mkdir(parents=True)
        (snapshot / "snapshot").mkdir()
        if hours_ago is not None or text is not None:
            (snapshot / "info.xml").write_text(text if text is not None else info_xml(utc_text(hours_ago), number))

    def btrbk(self, folder: Path, name: str) -> None:
        (folder / "btrbk_snapshots" / name).mkdir(parents=True)

    def run(self, verbosity: int = NORMAL, **settings: str) -> tuple[int, str, str]:
        environ = {"CIPUG_SERVICES_ROOT": str(self.root), "HOME": str(self.root)}
        environ.update({"CIPUG_" + name.upper(): value for name, value in settings.items()})
        out, err = io.StringIO(), io.StringIO()
        code = check_snapshots(load_settings(environ), self.services, Log(verbosity, out, err), NOW)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


SNAPPER = {"snapshots_dir_snapper": ".snapshots"}
BTRBK = {"snapshots_dir_btrbk": "btrbk_snapshots"}


# --- btrbk names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "taken", "counter"),
    [
        # timestamp_format short: the day only, local time
        ("nextcloud.20250701", datetime(2025, 7, 1), 0),
        ("nextcloud.20250701_2", datetime(2025, 7, 1), 2),
        # long (btrbk's default)
        ("nextcloud.20250701T1531", datetime(2025, 7, 1, 15, 31), 0),
        ("nextcloud.20250701T1531_1", datetime(2025, 7, 1, 15, 31), 1),
        # seconds without a zone
        ("nextcloud.20250701T153107", datetime(2025, 7, 1, 15, 31, 7), 0),
        # long-iso
        ("nextcloud.20250701T153107+0200", datetime(2025, 7, 1, 15, 31, 7, tzinfo=timezone(timedelta(hours=2))), 0),
        ("nextcloud.20250701T153107-0530_3", datetime(2025, 7, 1, 15, 31, 7, tzinfo=timezone(timedelta(hours=-5.5))), 3),
        ("nextcloud.20250701T153107Z", datetime(2025, 7, 1, 15, 31, 7, tzinfo=UTC), 0),
        # dots in the snapshot name
        ("my.app.data.20250701T1531", datetime(2025, 7, 1, 15, 31), 0),
    ],
)
def test_btrbk_name_formats(name: str, taken: datetime, counter: int) -> None:
    assert parse_btrbk_name(name) == (taken, counter)


@pytest.mark.parametrize(
    "name",
    [
        "20250701T1531",  # no snapshot name
        "nextcloud",
        "nextcloud.2025070",
        "nextcloud.20250701T15",
        "nextcloud.20250701T1531+0200",  # a zone only comes after seconds
        "nextcloud.20250701T1531.btrfs.xz",  # a raw backup file, not a snapshot
        "nextcloud.20251301T1200",  # month 13
        "nextcloud.20250701T2500",  # hour 25
        "nextcloud.20250701T153107+2500",  # no such zone
        "nextcloud.00010101",  # year 1 in local time: beyond what the clock functions take
        "nextcloud.20250701T1531_",
        "nextcloud.２０２５0701",  # non-ASCII digits
    ],
)
def test_not_btrbk_names(name: str) -> None:
    assert parse_btrbk_name(name) is None


def test_newest_btrbk_compares_times_across_formats_and_zones(berlin_time: None) -> None:
    names = [
        "nextcloud.20250701T1000",  # local: 08:00 UTC
        "nextcloud.20250701T090000Z",  # 09:00 UTC, the newest
        "nextcloud.20250701T100000+0300",  # 07:00 UTC
        "nextcloud.20250630",
        "lost+found",
    ]
    assert newest_btrbk(names) == Snapshot("nextcloud.20250701T090000Z", datetime(2025, 7, 1, 9, tzinfo=UTC))


def test_newest_btrbk_same_time_takes_highest_counter() -> None:
    names = ["nextcloud.20250701T1000_2", "nextcloud.20250701T1000_10", "nextcloud.20250701T1000"]
    assert newest_btrbk(names).label == "nextcloud.20250701T1000_10"


def test_newest_btrbk_none() -> None:
    assert newest_btrbk(["notes", "lost+found"]) is None
    assert newest_btrbk([]) is None


# --- snapper info.xml --------------------------------------------------------------------------


def test_snapper_date_is_utc() -> None:
    assert parse_snapper_info(info_xml("2025-07-01 11:30:00").encode()) == datetime(2025, 7, 1, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "xml",
    [
        b"",
        b"<snapshot><num>3</num>",  # cut off
        b"<snapshot><num>3</num></snapshot>",  # no date
        info_xml("2025-07-01T11:30:00").encode(),
        info_xml("yesterday").encode(),
        info_xml("").encode(),
    ],
)
def test_unreadable_snapper_info(xml: bytes) -> None:
    assert parse_snapper_info(xml) is None


def test_newest_snapper_is_highest_number_with_readable_info() -> None:
    dates = {3: datetime(2025, 7, 1, tzinfo=UTC), 10: None, 9: datetime(2025, 6, 1, tzinfo=UTC)}
    asked: list[int] = []

    def read_date(number: int) -> datetime | None:
        asked.append(number)
        return dates[number]

    # By number, not by date: 9 is older than 3 but snapper numbered it later.
    assert newest_snapper(["3", "10", "9", "grub-snapshot.cfg"], read_date) == Snapshot("9", dates[9])
    assert asked == [10, 9]


# --- judging age -------------------------------------------------------------------------------


def test_age_equal_to_max_is_fresh() -> None:
    snapshot = Snapshot("5", datetime.fromtimestamp(NOW - 1.5 * 3600, UTC))
    verdict = judge("nextcloud", "snapper", Path("/srv/nextcloud/.snapshots"), snapshot, 1.5, NOW)
    assert (verdict.fresh, verdict.age) == (True, 1.5)
    assert verdict.line == "nextcloud: newest snapper snapshot 5 is 1.5 h old (max 1.5 h)"
    snapshot = Snapshot("5", datetime.fromtimestamp(NOW - 1.5 * 3600 - 36, UTC))
    verdict = judge("nextcloud", "snapper", Path("/srv/nextcloud/.snapshots"), snapshot, 1.5, NOW)
    assert (verdict.fresh, verdict.age) == (False, 1.51)
    assert judge("nextcloud", "snapper", Path("/srv/nextcloud/.snapshots"), None, 1.5, NOW).age is None


@pytest.mark.parametrize("age_seconds, max_hours, shown", [
    (1.44, 0.0001, "0.0004"),  # rounded to 0.0 it would read "0.0 h old, more than the max 0.0001 h"
    (0.36, 0.0001, "0.0"),  # fresh: one decimal already reads true
    (1.5 * 3600 + 1.44, 1.5, "1.5004"),
    (1.46 * 3600, 1.5, "1.5"),  # fresh, and 1.5 is no more than the max
    (60 * 3600, 36, "60.0"),
])
def test_an_age_reads_as_it_compares_with_the_max(age_seconds, max_hours, shown) -> None:
    snapshot = Snapshot("5", datetime.fromtimestamp(NOW - age_seconds, UTC))
    verdict = judge("web", "snapper", Path("/srv/web/.snapshots"), snapshot, max_hours, NOW)
    assert f" is {shown} h old" in verdict.line
    assert verdict.fresh == (float(shown) <= max_hours)


# --- snapper, end to end -----------------------------------------------------------------------


def test_snapper_fresh(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    setup.snapper(nextcloud, 11, 5)
    setup.snapper(nextcloud, 12, 0.4)
    code, out, err = setup.run(**SNAPPER)
    assert (code, out, err) == (0, "nextcloud: newest snapper snapshot 12 is 0.4 h old (max 1.5 h)\n", "")


def test_snapper_old(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    setup.snapper(nextcloud, 12, 2.25)
    code, out, err = setup.run(**SNAPPER)
    assert code == ExitCode.SNAPSHOTS_STALE == 40
    assert err == (
        f"cipug: error: nextcloud: newest snapper snapshot 12 in {nextcloud / '.snapshots'} is 2.2 h old,"
        " more than the max 1.5 h\n"
    )


def test_snapper_max_age_setting(setup: Setup) -> None:
    setup.snapper(setup.service("nextcloud"), 12, 2.25)
    code, out, _ = setup.run(snapshots_max_age_snapper="3", **SNAPPER)
    assert (code, out) == (0, "nextcloud: newest snapper snapshot 12 is 2.2 h old (max 3 h)\n")


def test_snapper_folder_missing(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    code, _, err = setup.run(**SNAPPER)
    assert code == 40
    assert err == (
        f"cipug: error: nextcloud: snapper snapshot folder {nextcloud / '.snapshots'} does not exist (max age 1.5 h)\n"
    )


def test_snapper_folder_empty(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    (nextcloud / ".snapshots").mkdir()
    code, _, err = setup.run(**SNAPPER)
    assert code == 40
    assert err == f"cipug: error: nextcloud: no snapper snapshot in {nextcloud / '.snapshots'} (max age 1.5 h)\n"


def test_snapper_unparseable_newest_falls_back_to_the_one_before(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    setup.snapper(nextcloud, 11, 0.5)
    setup.snapper(nextcloud, 12, None, text="<snapshot><date>2025-07-01")  # cut off while being written
    setup.snapper(nextcloud, 13, None)  # no info.xml yet
    code, out, err = setup.run(verbosity=VERBOSE, **SNAPPER)
    assert code == 0
    assert out.splitlines() == [
        f"nextcloud: skipping snapper snapshot 13: {nextcloud / '.snapshots/13/info.xml'} cannot be read:"
        " No such file or directory",
        f"nextcloud: skipping snapper snapshot 12: {nextcloud / '.snapshots/12/info.xml'} is unreadable"
        " (no valid <date>)",
        "nextcloud: newest snapper snapshot 11 is 0.5 h old (max 1.5 h)",
    ]


def test_snapper_only_unparseable_snapshots(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    setup.snapper(nextcloud, 1, None, text="not xml at all")
    code, _, err = setup.run(**SNAPPER)
    assert code == 40
    assert "nextcloud: no snapper snapshot in" in err


# --- btrbk, end to end -------------------------------------------------------------------------


def test_btrbk_fresh_in_local_time(setup: Setup, berlin_time: None) -> None:
    nextcloud = setup.service("nextcloud")
    setup.btrbk(nextcloud, "nextcloud.20250630T1200")
    # 13:00 in Berlin is 11:00 UTC, an hour before NOW.
    setup.btrbk(nextcloud, "nextcloud.20250701T1300")
    code, out, err = setup.run(**BTRBK)
    assert (code, err) == (0, "")
    assert out == "nextcloud: newest btrbk snapshot nextcloud.20250701T1300 is 1.0 h old (max 36 h)\n"


@pytest.mark.parametrize(
    ("name", "age"),
    [
        # NOW is 14:00 in Berlin, 12:00 UTC.
        ("nextcloud.20250701", "14.0"),  # short: local midnight
        ("nextcloud.20250701_1", "14.0"),
        ("nextcloud.20250701T0200", "12.0"),  # long: local time
        ("nextcloud.20250701T0200_1", "12.0"),
        ("nextcloud.20250701T020000", "12.0"),
        ("nextcloud.20250701T000000Z", "12.0"),  # long-iso: the zone wins over local time
        ("nextcloud.20250701T053000+0530", "12.0"),
        ("nextcloud.20250630T190000-0500_2", "12.0"),
    ],
)
def test_btrbk_all_formats(setup: Setup, berlin_time: None, name: str, age: str) -> None:
    setup.btrbk(setup.service("nextcloud"), name)
    code, out, _ = setup.run(**BTRBK)
    assert (code, out) == (0, f"nextcloud: newest btrbk snapshot {name} is {age} h old (max 36 h)\n")


def test_btrbk_old(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    setup.btrbk(nextcloud, "nextcloud.20250629T000000Z")
    code, _, err = setup.run(**BTRBK)
    assert code == 40
    assert err == (
        f"cipug: error: nextcloud: newest btrbk snapshot nextcloud.20250629T000000Z in {nextcloud / 'btrbk_snapshots'}"
        " is 60.0 h old, more than the max 36 h\n"
    )


def test_btrbk_folder_missing(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    code, _, err = setup.run(**BTRBK)
    assert code == 40
    assert err == (
        f"cipug: error: nextcloud: btrbk snapshot folder {nextcloud / 'btrbk_snapshots'} does not exist (max age 36 h)\n"
    )


def test_btrbk_folder_without_snapshots(setup: Setup) -> None:
    nextcloud = setup.service("nextcloud")
    setup.btrbk(nextcloud, "not-a-snapshot")
    # A file named like a snapshot is not one: btrbk snapshots are subvolumes.
    (nextcloud / "btrbk_snapshots" / "notes.20250701T1100").write_text("")
    code, _, err = setup.run(**BTRBK)
    assert code == 40
    assert err == f"cipug: error: nextcloud: no btrbk snapshot in {nextcloud / 'btrbk_snapshots'} (max age 36 h)\n"


# --- several services and kinds ----------------------------------------------------------------


def test_one_stale_service_fails_the_check(setup: Setup) -> None:
    setup.snapper(setup.service("gitea"), 4, 0.2)
    setup.snapper(setup.service("nextcloud"), 7, 9)
    setup.snapper(setup.service("vaultwarden"), 1, 1)
    code, out, err = setup.run(**SNAPPER)
    assert code == 40
    assert out.splitlines() == [
        "gitea: newest snapper snapshot 4 is 0.2 h old (max 1.5 h)",
        "vaultwarden: newest snapper snapshot 1 is 1.0 h old (max 1.5 h)",
    ]
    assert len(err.splitlines()) == 1 and err.startswith("cipug: error: nextcloud: newest snapper snapshot 7 in ")


def test_both_kinds_together(setup: Setup) -> None:
    gitea = setup.service("gitea")
    setup.snapper(gitea, 4, 0.2)
    setup.btrbk(gitea, "gitea.20250701T100000Z")
    nextcloud = setup.service("nextcloud")
    setup.snapper(nextcloud, 2, 1)
    code, out, err = setup.run(**SNAPPER, **BTRBK)
    assert code == 40
    assert out.splitlines() == [
        "gitea: newest snapper snapshot 4 is 0.2 h old (max 1.5 h)",
        "gitea: newest btrbk snapshot gitea.20250701T100000Z is 2.0 h old (max 36 h)",
        "nextcloud: newest snapper snapshot 2 is 1.0 h old (max 1.5 h)",
    ]
    assert err == (
        f"cipug: error: nextcloud: btrbk snapshot folder {nextcloud / 'btrbk_snapshots'} does not exist (max age 36 h)\n"
    )


def test_both_kinds_fresh(setup: Setup) -> None:
    gitea = setup.service("gitea")
    setup.snapper(gitea, 4, 0.2)
    setup.btrbk(gitea, "gitea.20250701T100000Z")
    assert setup.run(**SNAPPER, **BTRBK)[0] == 0


def test_quiet_prints_only_errors(setup: Setup) -> None:
    setup.snapper(setup.service("gitea"), 4, 0.2)
    setup.service("nextcloud")
    code, out, err = setup.run(verbosity=0, **SNAPPER)
    assert code == 40 and out == ""
    assert err.startswith("cipug: error: nextcloud: snapper snapshot folder ")


def test_no_snapshot_folder_configured(setup: Setup) -> None:
    setup.snapper(setup.service("nextcloud"), 1, 0.1)
    code, out, err = setup.run()
    assert code == ExitCode.INVALID_VALUE
    assert out == ""
    assert "set SNAPSHOTS_DIR_SNAPPER and/or SNAPSHOTS_DIR_BTRBK" in err
