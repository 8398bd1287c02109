"""cipug.commands.check with holds, failed digests and UPDATE_MIN_AGE (the rest is in tests/test_cli.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cipug import holds
from cipug.commands.check import run_check
from cipug.errors import ExitCode
from cipug.files import state as state_file
from cipug.files.state import EntryState, Failed, Hold, ServiceState, State
from cipug.log import Log
from cipug.settings import load_settings
from tests.support.fakestack import DIGEST_A, DIGEST_B, ENV_A, HASHED, PIN_A, PIN_B

T0 = 1_800_000_000.0


@pytest.fixture
def web(stack, monkeypatch):
    stack.env.update(CIPUG_RESOLVER="skopeo", CIPUG_CHECK_DRIFT="false")
    stack.env_file = stack.service("web", ENV_A)
    monkeypatch.setattr(holds, "wall_clock", lambda: T0)
    return stack


def put_state(stack, service: ServiceState) -> Path:
    path = Path(stack.env["CIPUG_HISTORY_FILE"]).parent / "state.json"
    state_file.save(path, State({state_file.service_key(stack.root / "web"): service}))
    return path


def check(stack, capsys, json_output: bool = False, **values: str):
    config = load_settings({**stack.env, **{f"CIPUG_{key.upper()}": value for key, value in values.items()}},
                           cwd=stack.tmp_path)
    out = io.StringIO()
    code = run_check(config, Log(1, out, stack.err), json_output=json_output)
    printed = capsys.readouterr().out
    return code, out.getvalue() + printed


def test_a_held_service_is_shown_held_with_the_digest_available_and_is_not_pending(web, capsys):
    put_state(web, ServiceState("web", Hold("2026-01-01T00:00:00+00:00", "testing")))
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B, occurrences=2)

    code, out = check(web, capsys)
    assert code == ExitCode.OK
    assert (f"web: would not update: {HASHED} -> {DIGEST_B[:19]} held since 2026-01-01T00:00:00+00:00 (testing)"
            in out)
    assert "held back (held, failed before or not due): web" in out and "every image is current" not in out

    code, out = check(web, capsys, json_output=True, cache_duration="0")
    [service] = json.loads(out)
    assert code == ExitCode.OK
    assert (service["status"], service["held"]) == ("held", "held since 2026-01-01T00:00:00+00:00 (testing)")
    [item] = service["entries"]
    assert (item["current"], item["available"], item["pending"]) == (PIN_A, PIN_B, False)
    assert item["skipped"]["reason"] == "held"


def test_a_held_service_without_changes_says_so(web, capsys):
    put_state(web, ServiceState("web", Hold("2026-01-01T00:00:00+00:00")))
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    code, out = check(web, capsys)
    assert code == ExitCode.OK and "web: up to date (1 image); held since 2026-01-01T00:00:00+00:00" in out


def test_a_failed_digest_is_shown_and_not_pending(web, capsys):
    path = put_state(web, ServiceState("web", entries={
        HASHED: EntryState(failed=Failed(PIN_B, "2026-01-02T00:00:00+00:00", "not up"))}))
    before = path.read_bytes()
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)

    code, out = check(web, capsys, json_output=True)
    [item] = json.loads(out)[0]["entries"]
    assert code == ExitCode.OK and item["skipped"]["reason"] == "failed before" and item["available"] == PIN_B
    # check changes nothing, the state file neither.
    assert path.read_bytes() == before


def test_update_min_age_shows_when_the_digest_becomes_due(web, capsys):
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B, occurrences=2)
    code, out = check(web, capsys, update_min_age="1.5")
    due = holds.iso(T0 + 5400)
    assert code == ExitCode.OK and f"not due until {due}" in out
    code, out = check(web, capsys, json_output=True, update_min_age="1.5", cache_duration="0")
    [item] = json.loads(out)[0]["entries"]
    assert item["skipped"] == {"reason": "not due", "due": due, "detail": item["skipped"]["detail"]}
    assert not (Path(web.env["CIPUG_HISTORY_FILE"]).parent / "state.json").exists()


def test_a_change_that_goes_ahead_is_still_pending(web, capsys):
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    code, out = check(web, capsys, json_output=True)
    [service] = json.loads(out)
    assert code == ExitCode.UPDATES_PENDING and service["status"] == "pending" and service["held"] is None
    assert service["entries"][0]["pending"] is True and service["entries"][0]["skipped"] is None


def test_versions_come_from_history_the_local_images_and_for_moved_digests_the_registry(web, capsys):
    web.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B, occurrences=3)
    web.fp.register(["podman", "image", "inspect", PIN_A], stdout=json.dumps([{
        "Labels": {"org.opencontainers.image.version": "1.27.1"}, "RepoDigests": [PIN_A]}]), occurrences=2)
    web.fp.register(["skopeo", "inspect", "--config", f"docker://{PIN_B}"], stdout=json.dumps({
        "created": "2026-01-02T03:04:05Z", "config": {"Labels": {"org.opencontainers.image.version": "1.27.2"}}}),
        occurrences=2)

    code, out = check(web, capsys, check_versions="true")
    assert code == ExitCode.UPDATES_PENDING
    assert f"web: would set {HASHED}={PIN_B} (was {PIN_A}; 1.27.1 → 1.27.2)" in out

    code, out = check(web, capsys, json_output=True, check_versions="true")
    [entry] = json.loads(out)[0]["entries"]
    assert (entry["current_version"], entry["available_version"]) == ("1.27.1", "1.27.2")

    # Without CHECK_VERSIONS: no image inspect, no manifest GET, nothing known.
    calls = len(web.calls())
    code, out = check(web, capsys, json_output=True)
    [entry] = json.loads(out)[0]["entries"]
    assert (entry["current_version"], entry["available_version"]) == (None, None)
    assert [call[:2] for call in web.calls()[calls:]] == [["skopeo", "inspect"]]
