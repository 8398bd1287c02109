"""cipug.commands.rollback without Typer: choosing the update and the pins, and both ways of rolling back,
with snapper, the compose tool and podman faked by pytest-subprocess (the Stack of test_update)."""

from __future__ import annotations

import json
import os

import pytest
from tests.support.fakestack import DIGEST_A, DIGEST_B, ENV_A, ENV_B, ENV_C, HASHED, PIN_A, PIN_B, PIN_C, Rollback, containers, entry, record

from cipug.errors import ExitCode
from cipug.files import history
from cipug.settings import load_settings
from cipug.errors import CipugError
from cipug.log import Log
from cipug.commands.rollback import last_update, previous_pins, roll_back
from cipug.transaction import folder_records
from cipug.files.lock import run_lock

SNAPSHOTS = "snapper --jsonout -c web-snap list"
# The preview looks for the versions of the pins in the local images.
PREVIEW = f"podman image inspect {PIN_B} {PIN_A}"


def snapper_list(stack, *numbers: int) -> None:
    """`snapper --jsonout -c web-snap list` with these snapshots besides 0, the live folder."""
    listing = {"web-snap": [{"number": number, "description": "current" if number == 0 else "cipug web"}
                            for number in (0, *numbers)]}
    stack.fp.register(SNAPSHOTS.split(), stdout=json.dumps(listing), occurrences=5)


@pytest.fixture
def web(stack):
    rollback = Rollback(stack)
    rollback.add_history(record())
    snapper_list(stack, 5, 12)
    return rollback


# Choosing the update and the pins

def test_last_update_is_every_record_of_the_services_last_update_that_took_effect():
    first = [record(PIN_A, PIN_B, snapshot=3), record(None, PIN_C, entry="SERVICE_DB_IMAGE_HASHED", snapshot=3)]
    records = [
        *first,
        record(PIN_B, PIN_C, snapshot=4, time="2026-01-02T00:00:00+00:00", outcome=history.FAILED),
        record(PIN_B, PIN_C, snapshot=5, time="2026-01-03T00:00:00+00:00", service="other"),
        record(PIN_B, PIN_C, snapshot=6, time="2026-01-04T00:00:00+00:00"),
        record(PIN_C, PIN_B, snapshot=7, time="2026-01-05T00:00:00+00:00", outcome=history.ROLLED_BACK),
    ]

    assert last_update(records, "web") == [records[4]]
    assert last_update(records, "web", snapshot=3) == first
    assert last_update(records, "web", snapshot=4) == []  # that update failed: nothing to undo
    assert last_update(records, "nosuch") == []


def test_previous_pins_puts_back_what_the_update_replaced_and_skips_pins_in_place():
    update = [record(PIN_A, PIN_B), record(PIN_C, PIN_B, entry="SERVICE_DB_IMAGE_HASHED")]
    entries = [entry(PIN_B), entry(PIN_C, "SERVICE_DB_IMAGE_HASHED")]

    [change] = previous_pins(update, entries)

    assert change.entry == entries[0] and change.new == PIN_A
    assert change.resolution.digest == DIGEST_A


@pytest.mark.parametrize("update, entries, message", [
    ([record(None, PIN_B)], [entry(PIN_B)], "pinned for the first time"),
    ([record(PIN_A, PIN_B, entry="SERVICE_GONE_IMAGE_HASHED")], [entry(PIN_B)], "belongs to no *_IMAGE_TAGGED"),
    ([record("nginx:latest", PIN_B)], [entry(PIN_B)], "no valid earlier pin"),
])
def test_previous_pins_refuses_what_it_cannot_put_back(update, entries, message):
    with pytest.raises(CipugError) as raised:
        previous_pins(update, entries)
    assert raised.value.code == ExitCode.ROLLBACK_REFUSED and message in raised.value.message


def test_folder_records_have_each_images_pin_before_and_after():
    before = [entry(PIN_B), entry(PIN_C, "SERVICE_NEW_IMAGE_HASHED")]
    after = [entry(PIN_A), entry(None, "SERVICE_OLD_IMAGE_HASHED")]

    records = folder_records("web", before, after, 15, "web-snap", history.ROLLED_BACK, "restored")

    assert [(item.entry, item.old, item.new) for item in records] == [
        (HASHED, PIN_B, PIN_A), ("SERVICE_NEW_IMAGE_HASHED", PIN_C, None), ("SERVICE_OLD_IMAGE_HASHED", None, None)]
    assert {(item.snapshot, item.snapper_config, item.outcome, item.detail) for item in records} == {
        (15, "web-snap", "rolled back", "restored")}
    [bare] = folder_records("web", [], [], None, "web-snap", history.FAILED, "why")
    assert (bare.entry, bare.outcome, bare.detail) == ("", "failed", "why")


# Rolling back the whole folder

def test_folder_rollback_stops_snapshots_restores_pulls_and_starts(web):
    web.snapper(safety=15)
    web.undochange(12)
    for step in (("down",), ("pull",), ("up", "-d")):
        web.stack.compose("web", *step)

    assert web.run() == ExitCode.OK

    assert web.calls() == [
        "snapper --jsonout list-configs",
        SNAPSHOTS,
        PREVIEW,
        "podman-compose -f compose.yml down",
        "snapper -c web-snap create --cleanup-algorithm number --description cipug rollback web: before "
        "undochange 12..0 --print-number",
        "snapper -c web-snap undochange 12..0",
        "podman-compose -f compose.yml pull",
        f"podman image inspect {PIN_A}",
        "podman-compose -f compose.yml up -d",
    ]
    assert web.env_file.read_text() == ENV_A
    [done] = web.last_records()
    assert (done.outcome, done.old, done.new, done.snapshot, done.snapper_config, done.detail) == (
        "rolled back", PIN_B, PIN_A, 15, "web-snap", "folder restored to snapshot 12")
    assert web.questions == ["Roll back web to snapshot 12?"]
    out = web.stack.out.getvalue()
    assert "to snapper snapshot 12 (config web-snap), taken before the update at 2026-01-01" in out
    assert f"{HASHED} (nginx:latest): {DIGEST_B[:19]} -> {DIGEST_A[:19]}" in out
    assert "state before the rollback is snapshot 15" in out
    # Held afterwards, naming the digest it was rolled back from.
    assert "web: held since " in out and f"(cipug rollback; rolled back from {DIGEST_B[:19]})" in out
    assert "`cipug release web`" in out and web.stack.err.getvalue() == ""


def test_declined_rollback_changes_nothing_and_records_nothing(web):
    web.snapper()
    web.answer = False

    assert web.run() == ExitCode.OK

    assert web.calls() == ["snapper --jsonout list-configs", SNAPSHOTS, PREVIEW]
    assert web.env_file.read_text() == ENV_B and web.last_records() == []
    assert "cancelled: nothing was changed" in web.stack.out.getvalue()


def test_folder_rollback_waits_until_the_service_is_up(web):
    web.snapper()
    web.undochange(12)
    for step in (("down",), ("pull",), ("up", "-d")):
        web.stack.compose("web", *step)
    label = f"label=com.docker.compose.project.working_dir={os.path.realpath(web.env_file.parent)}"
    web.stack.fp.register(["podman", "ps", "-a", "-q", "--filter", label], stdout="id0\n", occurrences=100)
    web.stack.fp.register(["podman", "inspect", "id0"], stdout=containers(("exited", "")), occurrences=100)

    assert web.run(health_timeout="1") == ExitCode.RESTART_FAILED

    assert web.env_file.read_text() == ENV_A  # restored all the same; only starting failed
    [done] = web.last_records()
    assert done.outcome == "rolled back" and "web_app_0 is exited" in done.detail
    assert "folder restored to snapshot 12, but not up within 1 s" in web.stack.err.getvalue()
    assert web.stack.time.slept == [1]


def test_snapshot_option_overrides_history(web):
    web.snapper()
    web.undochange(5, restored=ENV_C)
    for step in (("down",), ("pull",), ("down",), ("up", "-d")):
        web.stack.compose("web", *step)

    assert web.run(snapshot=5, service_pull="false") == ExitCode.OK

    assert "snapper -c web-snap undochange 5..0" in web.calls()
    assert "podman-compose -f compose.yml pull" not in web.calls()
    assert web.questions == ["Roll back web to snapshot 5?"]
    [done] = web.last_records()
    assert (done.old, done.new, done.detail) == (PIN_B, PIN_C, "folder restored to snapshot 5")


@pytest.mark.parametrize("records, message", [
    ([], "has no update to roll back; name a snapshot with --snapshot N (see `snapper -c web-snap list`)"),
    ([record(snapshot=None)], "took no snapshot (SERVICE_SNAPSHOT was off); use --image-only"),
    ([record(snapper_config="old-snap")], "was taken with snapper config old-snap, but"),
])
def test_folder_rollback_refuses_without_a_snapshot_to_go_back_to(stack, records, message):
    rollback = Rollback(stack)
    rollback.add_history(*records)
    rollback.snapper()

    with pytest.raises(CipugError) as raised:
        rollback.run()

    assert raised.value.code == ExitCode.ROLLBACK_REFUSED and message in raised.value.message
    assert rollback.calls() == ["snapper --jsonout list-configs"] and rollback.questions == []


@pytest.mark.parametrize("number", [999, 0], ids=["not in the config", "0, the live folder"])
def test_a_snapshot_that_is_not_there_is_refused_before_anything_stops(web, number):
    web.snapper()

    with pytest.raises(CipugError) as raised:
        web.run(snapshot=number)

    assert raised.value.code == ExitCode.ROLLBACK_REFUSED
    assert raised.value.message == (f"web: snapper config web-snap has no snapshot {number} (see `snapper -c web-snap "
                                    "list`); nothing was changed")
    assert web.calls() == ["snapper --jsonout list-configs", SNAPSHOTS]
    assert web.questions == [] and web.last_records() == [] and web.env_file.read_text() == ENV_B


def test_a_folder_that_cannot_be_written_is_refused_before_anything_stops(web, monkeypatch):
    # What a read-only btrfs subvolume says even to root; undochange would fail only after the stop.
    folder = str(web.env_file.parent)
    monkeypatch.setattr(os, "access", lambda path, mode: not (str(path) == folder and mode == os.W_OK))
    web.snapper()

    with pytest.raises(CipugError) as raised:
        web.run()

    assert raised.value.code == ExitCode.ROLLBACK_REFUSED and "cannot be written" in raised.value.message
    assert web.calls() == ["snapper --jsonout list-configs", SNAPSHOTS] and web.questions == []


def test_failed_undochange_starts_the_service_again(web):
    web.snapper(safety=15)
    web.undochange(12, returncode=1)
    web.stack.compose("web", "down")
    web.stack.compose("web", "up", "-d")

    assert web.run() == ExitCode.SNAPSHOT_FAILED

    assert web.calls()[-2:] == ["snapper -c web-snap undochange 12..0", "podman-compose -f compose.yml up -d"]
    assert web.env_file.read_text() == ENV_B
    err = web.stack.err.getvalue()
    assert "snapper said no; it was started again" in err and "undochange 15..0` puts back the state before" in err
    [failed] = web.last_records()
    assert (failed.outcome, failed.old, failed.new, failed.snapshot) == ("failed", PIN_B, PIN_B, 15)


def test_failed_stop_changes_nothing_and_starts_what_it_may_have_stopped(web):
    web.snapper()
    web.stack.compose("web", "down", returncode=1)
    web.stack.compose("web", "up", "-d")

    assert web.run() == ExitCode.RESTART_FAILED

    assert web.calls() == ["snapper --jsonout list-configs", SNAPSHOTS, PREVIEW, "podman-compose -f compose.yml down",
                           "podman-compose -f compose.yml up -d"]
    assert web.env_file.read_text() == ENV_B
    assert "stopping failed" in web.stack.err.getvalue() and "it was started again" in web.stack.err.getvalue()
    [failed] = web.last_records()
    assert (failed.outcome, failed.snapshot) == ("failed", None)


def test_failed_pull_is_a_warning_and_the_service_starts(web):
    web.snapper()
    web.undochange(12)
    web.stack.compose("web", "pull", returncode=1)
    for step in (("down",), ("up", "-d")):
        web.stack.compose("web", *step)

    assert web.run() == ExitCode.OK

    assert "pull failed" in web.stack.err.getvalue() and "starting with the images at hand" in web.stack.err.getvalue()
    assert web.calls()[-1] == "podman-compose -f compose.yml up -d"


def test_systemd_method_stops_and_starts_the_unit(web):
    web.snapper()
    web.undochange(12)
    for action in ("stop", "start"):
        web.stack.fp.register(["systemctl", action, "podman-compose@web.service"])

    assert web.run(stop_start_method="systemd-system", service_pull="false") == ExitCode.OK
    assert web.calls()[3] == "systemctl stop podman-compose@web.service"
    assert web.calls()[-1] == "systemctl start podman-compose@web.service"


def test_a_service_the_filters_leave_out_can_be_rolled_back(web):
    web.snapper()
    web.answer = False

    assert web.run(services_filter_exclude="web") == ExitCode.OK
    assert web.questions == ["Roll back web to snapshot 12?"]


def test_unknown_service_and_missing_tool_fail_before_anything_runs(stack):
    rollback = Rollback(stack)
    config = load_settings(stack.env, cwd=stack.tmp_path)
    with pytest.raises(CipugError) as raised:
        roll_back(config, Log(), "nosuch", confirm=rollback.confirm)
    assert raised.value.code == ExitCode.DIRECTORY_NOT_FOUND

    (stack.tmp_path / "bin" / "snapper").unlink()
    with pytest.raises(CipugError) as raised:
        rollback.run()
    assert raised.value.code == ExitCode.TOOL_MISSING and "snapper" in raised.value.message
    assert rollback.calls() == []


def test_rollback_waits_for_no_running_update(web):
    config = load_settings(web.stack.env, cwd=web.stack.tmp_path)
    with run_lock(config), pytest.raises(CipugError) as raised:
        web.run()
    assert raised.value.code == ExitCode.LOCKED and web.calls() == []


# Rolling back only the images

def test_image_only_writes_the_old_pins_pulls_and_restarts(web):
    web.snapper(safety=16)
    for step in (("ps",), ("pull",), ("down",), ("up", "-d")):
        web.stack.compose("web", *step)

    assert web.run(image_only=True) == ExitCode.OK

    assert web.env_file.read_text() == ENV_A
    assert not any("undochange" in call for call in web.calls())
    [done] = web.last_records()
    assert (done.outcome, done.old, done.new, done.snapshot) == ("rolled back", PIN_B, PIN_A, 16)
    assert done.detail == "image only: pins from before the update at 2026-01-01T00:00:00+00:00"
    out = web.stack.out.getvalue()
    assert "put back the images from before the update at 2026-01-01T00:00:00+00:00; data stays as it is" in out
    assert "steps: check that the compose tool works here, snapshot the folder, write .env, pull, note the versions, restart" in out
    assert "web: rolled back and restarted" in out
    assert web.questions == ["Roll back the images of web?"]


def test_image_only_with_snapshot_goes_back_before_that_update(web):
    web.add_history(record(PIN_B, PIN_C, snapshot=20, time="2026-02-01T00:00:00+00:00"))
    web.env_file.write_text(ENV_C)
    for step in (("ps",), ("down",), ("up", "-d")):
        web.stack.compose("web", *step)

    assert web.run(image_only=True, snapshot=12, service_snapshot="false", service_pull="false") == ExitCode.OK
    assert web.env_file.read_text() == ENV_A


def test_image_only_with_pins_already_back_does_nothing(web):
    web.env_file.write_text(ENV_A)

    assert web.run(image_only=True) == ExitCode.OK

    assert web.calls() == [] and web.questions == [] and web.last_records() == []
    assert "already pins the images from before the update" in web.stack.out.getvalue()


@pytest.mark.parametrize("records, snapshot, message", [
    ([record(None, PIN_B)], None, "pinned for the first time by the update at 2026-01-01T00:00:00+00:00"),
    ([], None, "has no update to roll back"),
    ([record()], 99, "has no update that took snapshot 99"),
])
def test_image_only_refuses_and_leaves_env_alone(stack, records, snapshot, message):
    rollback = Rollback(stack)
    rollback.add_history(*records)

    with pytest.raises(CipugError) as raised:
        rollback.run(image_only=True, snapshot=snapshot)

    # Not a bad command line: the command was right, history has nothing it could put back.
    assert raised.value.code == ExitCode.ROLLBACK_REFUSED == 3 and message in raised.value.message
    assert rollback.env_file.read_text() == ENV_B and rollback.calls() == []


def test_image_only_that_does_not_come_up_is_undone_and_recorded_as_failed(web):
    for step in (("ps",), ("pull",)):
        web.stack.compose("web", *step)
    web.stack.compose("web", "down", occurrences=2)
    web.stack.compose("web", "up", "-d", returncode=1)
    web.stack.compose("web", "up", "-d")

    assert web.run(image_only=True, service_snapshot="false") == ExitCode.RESTART_FAILED

    assert web.env_file.read_text() == ENV_B
    [failed] = web.last_records()
    assert failed.outcome == "failed" and failed.detail.startswith("image only: pins from before the update")
    assert "starting failed" in failed.detail


def test_the_preview_names_the_versions_from_history_and_the_local_images(stack):
    stack.fp.register(["podman", "image", "inspect", PIN_B], stdout=json.dumps([{
        "Labels": {"org.opencontainers.image.version": "1.27.2"}, "RepoDigests": [PIN_B]}]))
    web = Rollback(stack)
    web.add_history(record()._replace(old_version="1.27.1"))
    snapper_list(stack, 5, 12)
    web.snapper()
    web.answer = False

    assert web.run() == ExitCode.OK

    assert f"{HASHED} (nginx:latest): {DIGEST_B[:19]} -> {DIGEST_A[:19]} (1.27.2 → 1.27.1)" in stack.out.getvalue()
