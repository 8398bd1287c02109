"""cipug.files.state: the state file written privately and atomically, read only when trusted, validated."""

from __future__ import annotations

import io
import json
import os

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.files import state as state_file
from cipug.files.state import EntryState, Failed, Hold, Seen, ServiceState, State
from cipug.log import Log
from tests.support.fakestack import HASHED, PIN_A, PIN_B

SINCE = "2026-01-01T00:00:00+00:00"
FULL = State({"/srv/web": ServiceState("web", Hold(SINCE, "why", {HASHED: PIN_B}), {
    HASHED: EntryState(Hold(SINCE), Failed(PIN_B, SINCE, "not up"), Seen(PIN_A, SINCE))})})


def quiet() -> tuple[Log, io.StringIO]:
    err = io.StringIO()
    return Log(1, io.StringIO(), err), err


def test_what_is_saved_is_loaded_back_from_a_private_file(tmp_path):
    path = tmp_path / "state" / "state.json"
    state_file.save(path, FULL)
    log, err = quiet()
    assert state_file.load(path, log) == FULL and err.getvalue() == ""
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert json.loads(path.read_text())["version"] == 1


def test_no_file_is_an_empty_state(tmp_path):
    assert state_file.load(tmp_path / "nothing" / "state.json", quiet()[0]) == State()


@pytest.mark.parametrize("document, problem", [
    ({"name": "web", "hold": {"since": "yesterday"}}, "Invalid isoformat"),
    ({"name": "web", "hold": {"since": "2026-01-01T00:00:00"}}, "no time zone"),
    ({"name": "web", "entries": {HASHED: {"failed": {"pinned": "nginx:latest", "time": SINCE}}}}, "not a pinned"),
    ({"name": "web", "entries": {HASHED: {"seen": {"pinned": PIN_A}}}}, "KeyError"),
    ({"name": 3}, "not a string"),
    ([], "not an object"),
])
def test_a_damaged_service_is_left_out_with_a_warning(tmp_path, document, problem):
    path = tmp_path / "state.json"
    state_file.save(path, FULL)
    data = json.loads(path.read_text())
    data["services"]["/srv/bad"] = document
    path.write_text(json.dumps(data))
    log, err = quiet()
    assert state_file.load(path, log) == FULL
    assert "ignoring the damaged state of /srv/bad" in err.getvalue() and problem in err.getvalue()


@pytest.mark.parametrize("data", [b"\xff", b"[]", b'{"version": 1}', b"{"])
def test_a_file_that_is_no_state_file_is_a_warning(tmp_path, data):
    path = tmp_path / "state.json"
    path.write_bytes(data)
    path.chmod(0o600)
    log, err = quiet()
    assert state_file.load(path, log) == State()
    assert "ignoring the state file" in err.getvalue()


def test_a_file_others_could_have_written_is_not_trusted_and_replaced_when_saved(tmp_path):
    path = tmp_path / "state.json"
    target = tmp_path / "planted.json"
    state_file.save(target, FULL)
    path.symlink_to(target)
    log, err = quiet()
    assert state_file.load(path, log) == State() and "is a symlink" in err.getvalue()
    state_file.save(path, State())
    assert not path.is_symlink() and state_file.load(target, log) == FULL


def test_a_folder_anyone_may_write_is_refused_when_saving(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(CipugError) as raised:
        state_file.save(folder / "state.json", FULL)
    assert raised.value.code == ExitCode.STATE_WRITE_FAILED and "writable by others" in raised.value.message


def test_service_key_is_the_resolved_folder(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert state_file.service_key(tmp_path / "link") == str(tmp_path / "real")
