"""cipug.files.intents: the records that let the next run repair a service a killed run left part-way."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cipug.envfile import Previous
from cipug.errors import CipugError
from cipug.files import intents
from cipug.files.intents import Intent, PinIntent
from cipug.log import Log

PIN = "docker.io/library/nginx@sha256:" + "a" * 64
INTENT = Intent("web", "/srv/services/web", "update", "2026-12-01T00:00:00+00:00",
                (PinIntent("SERVICE_WEB_IMAGE_HASHED", "nginx:latest", None, PIN, Previous(False, False, "")),),
                None, None, None, intents.PINS)


def quiet() -> tuple[Log, io.StringIO]:
    err = io.StringIO()
    return Log(1, io.StringIO(), err), err


def test_a_record_saved_is_found_as_it_was_and_gone_once_removed(tmp_path: Path) -> None:
    path = intents.intent_path(tmp_path, Path("/srv/services/web"))
    intents.save(path, INTENT)
    log, _ = quiet()
    assert intents.pending(tmp_path, log) == [(path, INTENT)]
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    intents.remove(path, log)
    assert intents.pending(tmp_path, log) == []


def test_two_roots_with_the_same_service_name_keep_separate_records(tmp_path: Path) -> None:
    assert intents.intent_path(tmp_path, Path("/a/web")) != intents.intent_path(tmp_path, Path("/b/web"))


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"service": "web"}', b"\xff"])
def test_a_damaged_record_is_a_warning_never_fatal(tmp_path: Path, content: bytes) -> None:
    path = intents.intent_path(tmp_path, Path("/srv/services/web"))
    path.parent.mkdir(mode=0o700)
    path.write_bytes(content)
    path.chmod(0o600)
    log, err = quiet()
    assert intents.pending(tmp_path, log) == []
    assert err.getvalue().startswith(f"cipug: warning: ignoring intent record {path}: not an intent record")


def test_a_record_others_could_have_written_is_not_trusted(tmp_path: Path) -> None:
    path = intents.intent_path(tmp_path, Path("/srv/services/web"))
    intents.save(path, INTENT)
    path.chmod(0o666)
    log, err = quiet()
    assert intents.pending(tmp_path, log) == []
    assert "writable by others" in err.getvalue()


def test_a_record_that_cannot_be_written_stops_the_change_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / intents.FOLDER).write_text("a file where the folder should be")
    with pytest.raises(CipugError) as raised:
        intents.save(intents.intent_path(tmp_path, Path("/srv/services/web")), INTENT)
    assert "nothing was changed" in raised.value.message
