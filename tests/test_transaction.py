"""cipug.transaction: repairing what a run killed part-way left, with the programs faked."""

from __future__ import annotations

from pathlib import Path

from cipug.envfile import Previous
from cipug.errors import ExitCode
from cipug.files import intents
from cipug.files.intents import Intent, PinIntent
from cipug.log import Log
from cipug.lookup.references import Resolution
from cipug.plan import Change, ImageEntry
from cipug.services import select_services
from cipug.settings import load_settings
from cipug.transaction import restart_step
from tests.support.fakestack import DIGEST_A, DIGEST_B, PIN_A, PIN_B, TAGGED

HASHED = "SERVICE_WEB_IMAGE_HASHED"


def left_behind(stack, stage: str, previous: Previous, kind: str = "update", restore: int | None = None) -> Path:
    """The intent record of a run killed while it changed `web` from PIN_A to PIN_B."""
    intent = Intent("web", str(stack.root / "web"), kind, "2026-12-01T00:00:00+00:00",
                    (PinIntent(HASHED, "nginx:latest", PIN_A, PIN_B, previous),), 12, "web-snap", restore, stage)
    path = intents.intent_path(Path(stack.env["CIPUG_HISTORY_FILE"]).parent, stack.root / "web")
    intents.save(path, intent)
    return path


def test_an_update_killed_after_the_restart_began_is_undone_then_done_anew(stack):
    env_file = stack.service("web", f"{TAGGED}{HASHED}={PIN_B}\nDATA=1\n")
    path = left_behind(stack, intents.CONTAINERS, Previous(True, True, PIN_A))
    seen: list[str] = []
    stack.compose("web", "down", occurrences=2)
    stack.compose("web", "up", "-d", callback=lambda process: seen.append(env_file.read_text()))
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    for step in (("ps",), ("pull",), ("up", "-d")):
        stack.compose("web", *step)

    assert stack.update(service_snapshot="false", prune_images="false") == ExitCode.OK

    # The repair restarted on the earlier pin; the run's own live lookup then updated it.
    assert seen == [f"{TAGGED}{HASHED}={PIN_A}\nDATA=1\n"]
    assert env_file.read_text() == f"{TAGGED}{HASHED}={PIN_B}\nDATA=1\n"
    assert not path.exists()
    assert [(record.outcome, record.old, record.new) for record in stack.history()] == [
        ("failed", PIN_A, PIN_B), ("updated", PIN_A, PIN_B)]
    assert "interrupted at 2026-12-01T00:00:00+00:00" in stack.history()[0].detail


def test_a_pin_edited_since_the_kill_is_left_and_the_service_not_updated(stack):
    by_hand = f"docker.io/library/nginx@{DIGEST_A[:-1]}0"
    env_file = stack.service("web", f"{TAGGED}{HASHED}={by_hand}\n")
    path = left_behind(stack, intents.PINS, Previous(True, True, PIN_A))

    assert stack.update(service_snapshot="false", prune_images="false") == ExitCode.ENV_WRITE_FAILED

    assert env_file.read_text() == f"{TAGGED}{HASHED}={by_hand}\n"
    # Kept, so the next run tries again; no lookup, no change meanwhile.
    assert path.exists() and stack.calls() == []
    assert "changed since the interrupted run wrote it" in stack.err.getvalue()


def test_a_folder_rollback_killed_during_its_restore_is_finished(stack):
    env_file = stack.service("web", f"{TAGGED}{HASHED}={PIN_B}\n")
    path = left_behind(stack, intents.RESTORE, Previous(True, True, PIN_B), kind="folder rollback", restore=12)
    stack.fp.register(["snapper", "-c", "web-snap", "undochange", "12..0"],
                      callback=lambda process: env_file.write_text(f"{TAGGED}{HASHED}={PIN_A}\n"))
    stack.compose("web", "up", "-d")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)

    assert stack.update(service_snapshot="false", prune_images="false") == ExitCode.OK

    assert env_file.read_text() == f"{TAGGED}{HASHED}={PIN_A}\n" and not path.exists()
    [record] = stack.history()
    assert (record.outcome, record.old, record.new) == ("rolled back", PIN_B, PIN_A)


# RESTART=changed: which compose services the Restart step recreates, read from the compose file.

def restart_for(stack, compose_text: str, **settings: str):
    stack.service("web", f"{TAGGED}{HASHED}={PIN_A}\n")
    (stack.root / "web" / "compose.yml").write_text(compose_text)
    config = load_settings({**stack.env, **{f"CIPUG_{key}": value for key, value in settings.items()}},
                           cwd=stack.tmp_path)
    [service] = select_services(config, Log(0))
    change = Change(ImageEntry(HASHED.replace("HASHED", "TAGGED"), HASHED, "nginx:latest", PIN_A),
                    Resolution(PIN_B.split("@")[0], DIGEST_B))
    return restart_step(config, service, [change])


TWO = "services:\n  app:\n    image: ${SERVICE_WEB_IMAGE_HASHED}\n  db:\n    image: ${SERVICE_WEB_DB_IMAGE_HASHED}\n"


def test_restart_changed_names_the_compose_services_using_the_changed_pins(stack):
    step = restart_for(stack, TWO, RESTART="changed")
    assert step.only == ("app",) and step.describe() == "recreate app (the compose services whose image changed)"


def test_the_default_restarts_the_whole_service(stack):
    assert restart_for(stack, TWO).describe() == "restart"


def test_a_compose_file_not_read_with_certainty_restarts_the_whole_service_and_says_why(stack):
    step = restart_for(stack, "x: &a\n  image: ${SERVICE_WEB_IMAGE_HASHED}\nservices:\n  app:\n    <<: *a\n",
                       RESTART="changed")
    assert step.only == ()
    assert step.describe() == "restart (all of it: compose.yml: line 5: service app merges a mapping (`<<:`))"


def test_systemd_units_are_restarted_whole(stack):
    step = restart_for(stack, TWO, RESTART="changed", STOP_START_METHOD="systemd-system")
    assert step.only == () and "STOP_START_METHOD=systemd-system" in step.whole_because
