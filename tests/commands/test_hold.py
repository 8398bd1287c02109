"""cipug.commands.hold (`hold`, `release`) and the hold `cipug rollback` leaves, with the programs faked."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cipug import cli, holds
from cipug.commands.hold import hold, release
from cipug.errors import CipugError, ExitCode
from cipug.files import state as state_file
from cipug.files.lock import run_lock
from cipug.log import Log
from cipug.settings import load_settings
from tests.support.fakestack import DIGEST_B, ENV_A, ENV_B, HASHED, PIN_B, Rollback, record

T0 = 1_800_000_000.0
NOW = holds.iso(T0)


@pytest.fixture
def web(stack, monkeypatch):
    stack.env["CIPUG_RESOLVER"] = "skopeo"
    stack.env_file = stack.service("web", ENV_A)
    monkeypatch.setattr(holds, "wall_clock", lambda: T0)
    return stack


def settings(stack, **values: str):
    return load_settings({**stack.env, **{f"CIPUG_{key.upper()}": value for key, value in values.items()}},
                         cwd=stack.tmp_path)


def log(stack) -> Log:
    return Log(1, stack.out, stack.err)


def web_state(stack):
    path = Path(stack.env["CIPUG_HISTORY_FILE"]).parent / "state.json"
    return state_file.load(path, Log(0, io.StringIO(), io.StringIO())).service(
        state_file.service_key(stack.root / "web"), "web")


def test_hold_holds_the_service_with_its_reason(web):
    assert hold(settings(web), log(web), "web", reason="waiting for 1.2.1") == ExitCode.OK
    assert web_state(web).hold == state_file.Hold(NOW, "waiting for 1.2.1")
    assert web.out.getvalue() == (f"web: held since {NOW} (waiting for 1.2.1); update runs check it but change "
                                  "nothing until `cipug release web`\n")
    assert web.calls() == []


def test_hold_of_one_entry_takes_its_tagged_or_hashed_key(web):
    assert hold(settings(web), log(web), "web", entry="SERVICE_WEB_IMAGE_TAGGED") == ExitCode.OK
    service = web_state(web)
    assert service.hold is None and service.entry(HASHED).hold == state_file.Hold(NOW)
    assert f"`cipug release web --entry {HASHED}`" in web.out.getvalue()


def test_hold_of_an_entry_env_does_not_have_is_a_usage_error(web):
    with pytest.raises(CipugError) as raised:
        hold(settings(web), log(web), "web", entry="SERVICE_NOPE_IMAGE_HASHED")
    assert raised.value.code == ExitCode.USAGE and f"(entries: {HASHED})" in raised.value.message
    assert web_state(web).is_empty()


def test_hold_of_an_unknown_service_fails_and_a_filtered_out_one_works(web):
    with pytest.raises(CipugError) as raised:
        hold(settings(web), log(web), "nosuch")
    assert raised.value.code == ExitCode.DIRECTORY_NOT_FOUND
    assert hold(settings(web, services_filter_exclude="web"), log(web), "web") == ExitCode.OK


def test_hold_waits_for_no_running_update(web):
    with run_lock(settings(web)):
        with pytest.raises(CipugError) as raised:
            hold(settings(web), log(web), "web")
    assert raised.value.code == ExitCode.LOCKED


def test_a_state_file_that_cannot_be_written_fails_hold_with_36(web, monkeypatch):
    def refuse(path, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state_file, "write_private", refuse)
    with pytest.raises(CipugError) as raised:
        hold(settings(web), log(web), "web")
    assert raised.value.code == ExitCode.STATE_WRITE_FAILED and "Permission denied" in raised.value.message


def test_release_ends_the_hold_and_says_what_went(web):
    hold(settings(web), log(web), "web")
    hold(settings(web), log(web), "web", entry=HASHED, reason="db")

    assert release(settings(web), log(web), "web", entry=HASHED) == ExitCode.OK
    assert f"web: released the hold on {HASHED} (held since {NOW} (db))" in web.out.getvalue()
    assert f"the service itself is still held since {NOW}" in web.out.getvalue()
    assert release(settings(web), log(web), "web") == ExitCode.OK
    assert web_state(web).is_empty()
    assert release(settings(web), log(web), "web") == ExitCode.OK
    assert web.out.getvalue().endswith("web: nothing held and no failed digest; nothing to release\n")


# cipug rollback holds by default

@pytest.fixture
def rolled(web):
    web.env_file.write_text(ENV_B)
    web.env.update(CIPUG_SERVICE_SNAPSHOT="false", CIPUG_PRUNE_IMAGES="false")
    rollback = Rollback.__new__(Rollback)
    rollback.stack, rollback.env_file = web, web.env_file
    rollback.history_file = Path(web.env["CIPUG_HISTORY_FILE"])
    rollback.questions, rollback.answer = [], True
    rollback.add_history(record())
    for step in (("ps",), ("pull",), ("down",), ("up", "-d")):
        web.compose("web", *step)
    return rollback


def test_rollback_holds_the_service_and_the_next_run_leaves_it_alone(rolled):
    stack = rolled.stack
    assert rolled.run(image_only=True) == ExitCode.OK
    assert stack.env_file.read_text() == ENV_A
    assert web_state(stack).hold == state_file.Hold(NOW, "cipug rollback", {HASHED: PIN_B})
    assert "then hold web, so update runs leave it alone until `cipug release web`" in stack.out.getvalue()

    calls = len(stack.calls())
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    assert stack.run() == ExitCode.OK
    assert stack.env_file.read_text() == ENV_A and [call[0] for call in stack.calls()[calls:]] == ["skopeo"]
    assert f"(cipug rollback; rolled back from {DIGEST_B[:19]})" in stack.out.getvalue()

    assert release(settings(stack), log(stack), "web") == ExitCode.OK
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    stack.full_update("web")
    assert stack.run() == ExitCode.OK
    assert stack.env_file.read_text() == ENV_B


def test_rollback_with_no_hold_warns_that_the_next_run_moves_it_forward(rolled, monkeypatch):
    from cipug.commands.rollback import roll_back

    config = settings(rolled.stack)
    assert roll_back(config, log(rolled.stack), "web", confirm=rolled.confirm, image_only=True, hold=False,
                     sleep=rolled.stack.time.sleep, clock=rolled.stack.time.clock) == ExitCode.OK
    assert web_state(rolled.stack).is_empty()
    assert "not held (--no-hold)" in rolled.stack.err.getvalue() and "`cipug hold web`" in rolled.stack.err.getvalue()


def test_rollback_with_the_pins_already_back_still_holds(rolled):
    rolled.env_file.write_text(ENV_A)
    assert rolled.run(image_only=True) == ExitCode.OK
    assert web_state(rolled.stack).hold == state_file.Hold(NOW, "cipug rollback", {HASHED: PIN_B})


# The command line

def invoke(stack, *args: str):
    return CliRunner().invoke(cli.app, list(args), env=stack.env)


def test_cli_hold_and_release(web):
    result = invoke(web, "hold", "web", "--entry", HASHED, "--reason", "broken upstream")
    assert result.exit_code == 0, result.output
    assert web_state(web).entry(HASHED).hold == state_file.Hold(NOW, "broken upstream")
    assert invoke(web, "hold", "web", "--entry", "NOPE").exit_code == ExitCode.USAGE
    result = invoke(web, "release", "web", "--entry", HASHED)
    assert result.exit_code == 0 and "released the hold" in result.stdout
    assert web_state(web).is_empty()
    for command in ("hold", "release"):
        page = invoke(web, command, "--help")
        assert page.exit_code == 0 and "Example" in page.stdout and f"cipug {command}" in page.stdout


def test_cli_rollback_no_hold(rolled):
    result = CliRunner().invoke(cli.app, ["rollback", "web", "--image-only", "--yes", "--no-hold"],
                                env=rolled.stack.env)
    assert result.exit_code == 0, result.output
    assert web_state(rolled.stack).is_empty()
