"""cipug.holds: which changes go ahead (held, failed before, not due), as pure functions and in update runs,
with skopeo, snapper, the compose tool and podman faked by pytest-subprocess."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cipug import holds
from cipug.errors import ExitCode
from cipug.files import history
from cipug.files import state as state_file
from cipug.files.state import EntryState, Failed, Hold, Seen, ServiceState, State
from cipug.log import Log
from cipug.lookup.references import Resolution
from cipug.plan import FAILED_BEFORE, HELD, NOT_DUE, Change
from tests.support.fakestack import (DIGEST_A, DIGEST_B, DIGEST_C, ENV_A, ENV_B, HASHED, PIN_A, PIN_B, PIN_C, TAGGED,
                                     entry, record)

T0 = 1_800_000_000.0
DB = "SERVICE_DB_IMAGE_HASHED"


def change(new: str = PIN_B, current: str | None = PIN_A, key: str = HASHED) -> Change:
    name, _, digest = new.partition("@")
    return Change(entry(current, key), Resolution(name, digest))


# The decisions

def test_without_state_every_change_goes_ahead_and_nothing_is_remembered():
    go, skipped, after = holds.screen_service(ServiceState("web"), [entry(PIN_A)], [change()], 0, T0)
    assert go == [change()] and skipped == [] and after.is_empty()


def test_a_service_hold_keeps_every_change_back_and_records_when_it_was_seen():
    state = ServiceState("web", Hold("2026-01-01T00:00:00+00:00", "testing"))
    entries = [entry(PIN_A), entry(PIN_C, DB)]
    go, skipped, after = holds.screen_service(state, entries, [change(), change(PIN_B, PIN_C, DB)], 0, T0)
    assert go == []
    assert [(skip.change.entry.hashed_key, skip.reason) for skip in skipped] == [(HASHED, HELD), (DB, HELD)]
    assert skipped[0].detail == "held since 2026-01-01T00:00:00+00:00 (testing)"
    assert after.entry(HASHED).seen == Seen(PIN_B, holds.iso(T0)) and after.hold == state.hold


def test_an_entry_hold_keeps_only_that_entry_back():
    state = ServiceState("web", entries={DB: EntryState(hold=Hold("2026-01-01T00:00:00+00:00"))})
    go, skipped, _ = holds.screen_service(state, [entry(PIN_A), entry(PIN_C, DB)],
                                          [change(), change(PIN_B, PIN_C, DB)], 0, T0)
    assert [item.entry.hashed_key for item in go] == [HASHED]
    assert [skip.change.entry.hashed_key for skip in skipped] == [DB]


def test_a_failed_digest_is_skipped_until_the_tag_moves_to_another_one():
    state = ServiceState("web", entries={HASHED: EntryState(failed=Failed(PIN_B, "2026-01-02T00:00:00+00:00"))})
    go, [skip], after = holds.screen_service(state, [entry(PIN_A)], [change(PIN_B)], 0, T0)
    assert go == [] and skip.reason == FAILED_BEFORE and "did not come up at 2026-01-02" in skip.detail
    assert after.entry(HASHED).failed == state.entry(HASHED).failed

    go, skipped, after = holds.screen_service(state, [entry(PIN_A)], [change(PIN_C)], 0, T0)
    assert go == [change(PIN_C)] and skipped == []
    # Tried normally, so no longer remembered.
    assert after.is_empty()


def test_a_failed_mark_is_forgotten_once_the_tag_resolves_to_the_pin_again():
    state = ServiceState("web", entries={HASHED: EntryState(failed=Failed(PIN_B, "2026-01-02T00:00:00+00:00"))})
    assert holds.screen_service(state, [entry(PIN_A)], [], 0, T0)[2].is_empty()


def test_min_age_holds_a_new_digest_until_it_was_first_seen_long_enough_ago():
    go, [skip], after = holds.screen_service(ServiceState("web"), [entry(PIN_A)], [change()], 24, T0)
    assert go == [] and skip.reason == NOT_DUE and skip.due == holds.iso(T0 + 24 * 3600)
    assert "UPDATE_MIN_AGE 24 h" in skip.detail
    # An hour before it is due: still waiting, from the first sighting.
    go, [skip], later = holds.screen_service(after, [entry(PIN_A)], [change()], 24, T0 + 23 * 3600)
    assert go == [] and skip.due == holds.iso(T0 + 24 * 3600) and later == after
    go, skipped, _ = holds.screen_service(after, [entry(PIN_A)], [change()], 24, T0 + 24 * 3600)
    assert go == [change()] and skipped == []
    # A newer digest starts its own wait.
    go, [skip], _ = holds.screen_service(after, [entry(PIN_A)], [change(PIN_C)], 24, T0 + 24 * 3600)
    assert skip.due == holds.iso(T0 + 48 * 3600)


def test_state_of_entries_gone_from_env_keeps_only_holds():
    hold = Hold("2026-01-01T00:00:00+00:00")
    state = ServiceState("web", entries={DB: EntryState(hold, Failed(PIN_B, "2026-01-02T00:00:00+00:00"),
                                                        Seen(PIN_B, "2026-01-02T00:00:00+00:00"))})
    assert holds.screen_service(state, [entry(PIN_A)], [], 0, T0)[2].entries == {DB: EntryState(hold=hold)}


def test_remember_marks_digests_that_did_not_come_up_failed_and_clears_what_took_effect():
    keys = {"web": "/srv/web"}
    rolled = record(PIN_A, PIN_B, outcome=history.ROLLED_BACK)._replace(did_not_come_up=True)
    first_pin = record(None, PIN_C, outcome=history.FAILED, entry=DB)._replace(did_not_come_up=True)
    state = holds.remember(State(), keys, [rolled, first_pin,
                                           record(PIN_A, PIN_B, outcome=history.FAILED, entry="SERVICE_C_IMAGE_HASHED"),
                                           record(PIN_A, PIN_B, service="other", outcome=history.ROLLED_BACK)
                                           ._replace(did_not_come_up=True)])
    assert list(state.services) == ["/srv/web"]
    assert state.services["/srv/web"].entry(HASHED).failed == Failed(PIN_B, rolled.time, rolled.detail)
    # A first pin that was stopped had nothing to go back to; its digest is skipped all the same.
    assert state.services["/srv/web"].entry(DB).failed == Failed(PIN_C, first_pin.time, first_pin.detail)
    # A failure that was not the images' (a pull, an interruption) marks nothing.
    assert state.services["/srv/web"].entry("SERVICE_C_IMAGE_HASHED").failed is None
    assert holds.remember(state, keys, [record(PIN_A, PIN_C), record(None, PIN_B, entry=DB)]) == State()


def test_release_drops_holds_and_failed_marks_but_keeps_first_seen():
    seen = Seen(PIN_B, "2026-01-02T00:00:00+00:00")
    service = ServiceState("web", Hold("2026-01-01T00:00:00+00:00"), {
        HASHED: EntryState(Hold("2026-01-01T00:00:00+00:00"), Failed(PIN_B, "2026-01-02T00:00:00+00:00"), seen),
        DB: EntryState(hold=Hold("2026-01-01T00:00:00+00:00"))})
    state = State({"/srv/web": service})

    one, gone = holds.released(state, "/srv/web", "web", DB)
    assert gone == [f"the hold on {DB} (held since 2026-01-01T00:00:00+00:00)"]
    assert one.services["/srv/web"].hold is not None and DB not in one.services["/srv/web"].entries

    everything, gone = holds.released(state, "/srv/web", "web")
    assert len(gone) == 4
    assert everything.services["/srv/web"] == ServiceState("web", None, {HASHED: EntryState(seen=seen)})
    assert holds.released(State(), "/srv/web", "web") == (State(), [])


# In update runs

@pytest.fixture
def web(stack, monkeypatch):
    stack.env["CIPUG_RESOLVER"] = "skopeo"
    stack.env_file = stack.service("web", ENV_A)
    stack.now = T0
    monkeypatch.setattr(holds, "wall_clock", lambda: stack.now)
    return stack


def state_of(stack) -> State:
    return state_file.load(Path(stack.env["CIPUG_HISTORY_FILE"]).parent / "state.json", Log(0, io.StringIO(), io.StringIO()))


def save_state(stack, state: State) -> None:
    state_file.save(Path(stack.env["CIPUG_HISTORY_FILE"]).parent / "state.json", state)


def web_state(stack) -> ServiceState:
    return state_of(stack).service(state_file.service_key(stack.root / "web"), "web")


def hold_web(stack, **entries: EntryState) -> None:
    hold = None if entries else Hold("2026-01-01T00:00:00+00:00", "testing")
    save_state(stack, State({state_file.service_key(stack.root / "web"): ServiceState("web", hold, entries)}))


def test_a_held_service_is_checked_but_not_touched(web):
    hold_web(web)
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)

    assert web.run() == ExitCode.OK

    assert web.env_file.read_text() == ENV_A
    assert [call[0] for call in web.calls()] == ["skopeo"]
    assert web.history() == []
    [line] = [line for line in web.out.getvalue().splitlines() if line.startswith("web:")]
    assert line == (f"web: not updated: {HASHED} -> {DIGEST_B[:19]} held since 2026-01-01T00:00:00+00:00 (testing)")


def test_a_held_entry_stays_while_the_others_update(web):
    web.env_file.write_text(ENV_A + f"SERVICE_DB_IMAGE_TAGGED=postgres:16\n{DB}=docker.io/library/postgres@{DIGEST_A}\n")
    hold_web(web, **{DB: EntryState(hold=Hold("2026-01-01T00:00:00+00:00"))})
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    web.skopeo("postgres:16", "docker.io/library/postgres", DIGEST_C)
    web.full_update("web")

    assert web.run(service_snapshot="false", prune_images="false") == ExitCode.OK

    text = web.env_file.read_text()
    assert PIN_B in text and f"postgres@{DIGEST_A}" in text
    assert [item.entry for item in web.history()] == [HASHED]


def rolled_back_update(stack) -> None:
    """An update to DIGEST_B whose restart fails, so it is rolled back to DIGEST_A."""
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    for step in (("ps",), ("pull",)):
        stack.compose("web", *step)
    stack.compose("web", "down", occurrences=2)
    stack.compose("web", "up", "-d", returncode=1)
    stack.compose("web", "up", "-d")


def test_a_digest_rolled_back_is_skipped_by_later_runs_until_the_tag_moves_on(web):
    rolled_back_update(web)
    assert web.run(service_snapshot="false", prune_images="false") == ExitCode.RESTART_FAILED
    assert web.env_file.read_text() == ENV_A
    failed = web_state(web).entry(HASHED).failed
    assert failed is not None and failed.pinned == PIN_B

    # The next run: one line, no snapshot, pull or restart.
    calls = len(web.calls())
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    assert web.run(prune_images="false") == ExitCode.OK
    assert [call[0] for call in web.calls()[calls:]] == ["skopeo"]
    assert f"web: not updated: {HASHED} -> {DIGEST_B[:19]} failed before (did not come up at" in web.out.getvalue()
    assert [record.outcome for record in web.history()] == ["rolled back"]

    # A new digest is tried normally, and nothing is remembered once it took effect.
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_C)
    web.full_update("web")
    assert web.run(service_snapshot="false", prune_images="false") == ExitCode.OK
    assert PIN_C in web.env_file.read_text()
    assert state_of(web) == State()


def test_release_forgets_a_failed_digest_so_it_is_tried_again(web):
    from cipug.commands.hold import release
    from cipug.settings import load_settings

    rolled_back_update(web)
    assert web.run(service_snapshot="false", prune_images="false") == ExitCode.RESTART_FAILED
    config = load_settings(web.env, cwd=web.tmp_path)
    assert release(config, Log(1, web.out, web.err), "web") == ExitCode.OK
    assert f"web: released the failed digest {DIGEST_B[:19]} of {HASHED}" in web.out.getvalue()

    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    web.full_update("web")
    assert web.run(service_snapshot="false", prune_images="false") == ExitCode.OK
    assert PIN_B in web.env_file.read_text()


def test_update_min_age_waits_from_the_first_sighting(web):
    quiet = {"service_snapshot": "false", "prune_images": "false", "update_min_age": "2"}
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B, occurrences=3)

    assert web.run(**quiet) == ExitCode.OK
    assert web.env_file.read_text() == ENV_A
    due = holds.iso(T0 + 7200)
    assert f"not due until {due}" in web.out.getvalue()
    assert web_state(web).entry(HASHED).seen == Seen(PIN_B, holds.iso(T0))

    web.now = T0 + 7199
    assert web.run(**quiet) == ExitCode.OK
    assert web.env_file.read_text() == ENV_A

    web.now = T0 + 7200
    web.full_update("web")
    assert web.run(**quiet) == ExitCode.OK
    assert PIN_B in web.env_file.read_text()
    assert state_of(web) == State()


def test_a_dry_run_shows_holds_and_writes_no_state(web):
    from cipug.commands.update import run_update
    from cipug.settings import load_settings

    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    config = load_settings({**web.env, "CIPUG_UPDATE_MIN_AGE": "1"}, cwd=web.tmp_path)
    assert run_update(config, Log(1, web.out, web.err), dry_run=True) == ExitCode.OK
    assert f"web: would not update: {HASHED} -> {DIGEST_B[:19]} not due until" in web.out.getvalue()
    assert not (Path(web.env["CIPUG_HISTORY_FILE"]).parent / "state.json").exists()


def test_the_run_of_a_service_with_nothing_new_writes_no_state_file(web):
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    assert web.run() == ExitCode.OK
    assert not (Path(web.env["CIPUG_HISTORY_FILE"]).parent / "state.json").exists()


@pytest.mark.parametrize("content, mode, warning", [
    (b"{not json", 0o600, "ignoring the state file"),
    (json.dumps({"version": 99, "services": {}}).encode(), 0o600, "not a state file cipug writes"),
    (None, 0o620, "writable by group"),
])
def test_a_damaged_or_untrusted_state_file_is_a_warning_and_the_run_goes_on(web, content, mode, warning):
    hold_web(web)
    path = Path(web.env["CIPUG_HISTORY_FILE"]).parent / "state.json"
    if content is not None:
        path.write_bytes(content)
    path.chmod(mode)
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    web.full_update("web")

    assert web.run(service_snapshot="false", prune_images="false") == ExitCode.OK

    assert warning in web.err.getvalue()
    assert PIN_B in web.env_file.read_text()


def test_one_damaged_service_in_the_state_file_leaves_the_others_held(web):
    hold_web(web)
    path = Path(web.env["CIPUG_HISTORY_FILE"]).parent / "state.json"
    document = json.loads(path.read_text())
    document["services"]["/elsewhere"] = {"name": "x", "hold": {"since": "yesterday"}}
    path.write_text(json.dumps(document))
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)

    assert web.run() == ExitCode.OK
    assert web.env_file.read_text() == ENV_A
    assert "ignoring the damaged state of /elsewhere" in web.err.getvalue()


def test_a_state_file_that_cannot_be_written_is_a_warning(web, monkeypatch):
    def refuse(path, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state_file, "write_private", refuse)
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)

    assert web.run(update_min_age="1") == ExitCode.OK
    assert "cannot write the state file" in web.err.getvalue() and web.env_file.read_text() == ENV_A


def test_a_first_pin_that_did_not_come_up_is_skipped_by_later_runs(stack):
    env_file = stack.service("web", TAGGED)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    for step in (("ps",), ("pull",), ("down",)):
        stack.compose("web", *step)
    stack.compose("web", "up", "-d", returncode=1)
    # Nothing to go back to: the new containers are stopped.
    stack.compose("web", "down")

    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.RESTART_FAILED
    assert env_file.read_text() == TAGGED
    [record] = stack.history()
    assert (record.outcome, record.did_not_come_up) == ("failed", True)

    calls = len(stack.calls())
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    assert stack.run(prune_images="false") == ExitCode.OK
    assert [call[0] for call in stack.calls()[calls:]] == ["skopeo"]
    assert f"web: not updated: {HASHED} -> {DIGEST_B[:19]} failed before" in stack.out.getvalue()
    assert env_file.read_text() == TAGGED and len(stack.history()) == 1


def test_a_pull_that_failed_marks_no_digest(stack):
    env_file = stack.service("web", ENV_A)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B, occurrences=2)
    stack.compose("web", "ps", occurrences=2)
    stack.compose("web", "pull", returncode=1)
    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.PULL_FAILED
    assert not stack.history()[0].did_not_come_up

    # The next run tries the same digest again.
    stack.compose("web", "pull")
    stack.compose("web", "down")
    stack.compose("web", "up", "-d")
    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.OK
    assert env_file.read_text() == ENV_B
