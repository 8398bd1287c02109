"""Holds, failed digests and UPDATE_MIN_AGE on the real stack: what `.env` pins, which digest the container
runs (and whether it is the same container), the snapshots taken and the history written, across runs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.realstack import (EXIT_COMMAND, Deployed, compose_text, deploy, explain, snapper_snapshots, var,
                                     without_notes)

pytestmark = pytest.mark.integration

RESTART_FAILED = 34


def history(cipug) -> list[dict]:
    path = Path(cipug.settings["HISTORY_FILE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def state_path(cipug) -> Path:
    return Path(cipug.settings["HISTORY_FILE"]).parent / "state.json"


def web(containers, deployed: Deployed) -> tuple[str, str]:
    """The running `web` container's id and image digest."""
    item = containers.containers(deployed.service.name)["web"]
    assert item["State"]["Running"], item["State"]
    return item["Id"], item["ImageDigest"]


def pinned(deployed: Deployed) -> str:
    return without_notes(deployed.service.env_file.read_text()).split("@")[-1].strip()


@pytest.fixture
def run(cipug):
    """cipug run with the skopeo resolver (the registry is plain HTTP on loopback)."""
    return lambda *args, **settings: cipug.run(*args, RESOLVER="skopeo", **settings)


def test_a_rolled_back_service_stays_back_until_released(containers, services, cipug, tag, run):
    deployed = deploy(containers, services, "holdback", {"web": tag("web")})
    old = deployed.digests["web"]
    new = containers.push_image(deployed.tags["web"])
    assert (updated := run()).returncode == 0, explain(updated)
    assert web(containers, deployed)[1] == new

    rolled = run("rollback", deployed.service.name, "--yes")
    assert rolled.returncode == 0, explain(rolled)
    assert f"rolled back from {new[:19]}" in rolled.stdout
    container, digest = web(containers, deployed)
    assert digest == old and pinned(deployed) == old
    snapshots, records = len(snapper_snapshots(deployed.service.snapper_config)), len(history(cipug))

    # The tag still points to the newer image; the next timer run leaves the service alone.
    again = run()
    assert again.returncode == 0, explain(again)
    assert f"{deployed.service.name}: not updated:" in again.stdout and "held since" in again.stdout
    assert web(containers, deployed) == (container, old) and pinned(deployed) == old
    assert len(snapper_snapshots(deployed.service.snapper_config)) == snapshots and len(history(cipug)) == records

    released = run("release", deployed.service.name)
    assert released.returncode == 0, explain(released)
    moved = run()
    assert moved.returncode == 0, explain(moved)
    assert web(containers, deployed)[1] == new and pinned(deployed) == new
    assert history(cipug)[-1]["outcome"] == "updated"


def test_a_digest_that_failed_is_skipped_and_a_newer_one_is_tried(containers, services, cipug, tag, run):
    deployed = deploy(containers, services, "failskip", {"web": tag("web")})
    old = deployed.digests["web"]
    dying = containers.push_image(deployed.tags["web"], EXIT_COMMAND)
    first = run(HEALTH_TIMEOUT="5")
    assert first.returncode == RESTART_FAILED, explain(first)
    assert [record["outcome"] for record in history(cipug)] == ["rolled back"]
    container, digest = web(containers, deployed)
    assert digest == old
    snapshots = len(snapper_snapshots(deployed.service.snapper_config))

    # The tag still points to the dying image: skipped, with no snapshot, pull or restart.
    skipped = run(HEALTH_TIMEOUT="5")
    assert skipped.returncode == 0, explain(skipped)
    assert f"{dying[:19]} failed before" in skipped.stdout
    assert web(containers, deployed) == (container, old) and pinned(deployed) == old
    assert len(snapper_snapshots(deployed.service.snapper_config)) == snapshots
    assert len(history(cipug)) == 1
    checked = run("check", "--json")
    [item] = json.loads(checked.stdout)[0]["entries"]
    assert item["available"].endswith(dying) and item["skipped"]["reason"] == "failed before"

    # The tag moves to a good image: tried normally, and applied.
    good = containers.push_image(deployed.tags["web"])
    fixed = run()
    assert fixed.returncode == 0, explain(fixed)
    assert web(containers, deployed)[1] == good and pinned(deployed) == good
    assert [record["outcome"] for record in history(cipug)] == ["rolled back", "updated"]
    assert not state_path(cipug).exists() or json.loads(state_path(cipug).read_text())["services"] == {}


def test_a_first_pin_that_did_not_come_up_is_not_tried_again_until_its_tag_moves(containers, services, cipug, tag,
                                                                                 run):
    tagged = tag("web")
    dying = containers.push_image(tagged, EXIT_COMMAND)
    env = f"{var('web', 'TAGGED')}={tagged}\n"
    service = services.add("firstfail", env, compose_text("web"))

    first = run(HEALTH_TIMEOUT="5")
    assert first.returncode == RESTART_FAILED, explain(first)
    assert service.env_file.read_text() == env
    [record] = history(cipug)
    assert (record["outcome"], record["did_not_come_up"]) == ("failed", True)
    stopped = {item["Id"] for item in containers.containers(service.name).values()}
    snapshots = len(snapper_snapshots(service.snapper_config))

    # The next run: one line; no snapshot, pull or restart, the stopped containers left as they are.
    skipped = run(HEALTH_TIMEOUT="5")
    assert skipped.returncode == 0, explain(skipped)
    assert f"{dying[:19]} failed before" in skipped.stdout
    assert service.env_file.read_text() == env and len(history(cipug)) == 1
    assert {item["Id"] for item in containers.containers(service.name).values()} == stopped
    assert len(snapper_snapshots(service.snapper_config)) == snapshots

    good = containers.push_image(tagged)
    fixed = run()
    assert fixed.returncode == 0, explain(fixed)
    assert web(containers, Deployed(service, {"web": tagged}, {}))[1] == good


def test_update_min_age_holds_a_new_digest_until_it_is_old_enough(containers, services, cipug, tag, run):
    deployed = deploy(containers, services, "minage", {"web": tag("web")})
    old = deployed.digests["web"]
    new = containers.push_image(deployed.tags["web"])
    container, _ = web(containers, deployed)

    waiting = run(UPDATE_MIN_AGE="2")
    assert waiting.returncode == 0, explain(waiting)
    assert "not due until" in waiting.stdout
    assert web(containers, deployed) == (container, old) and pinned(deployed) == old and history(cipug) == []
    checked = run("check", "--json", UPDATE_MIN_AGE="2")
    [item] = json.loads(checked.stdout)[0]["entries"]
    assert item["skipped"]["reason"] == "not due" and item["available"].endswith(new)

    # The clock moves on: the first sighting, as the state file keeps it, was 2 h ago.
    path = state_path(cipug)
    document = json.loads(path.read_text())
    [service] = document["services"].values()
    [entry] = service["entries"].values()
    first = datetime.fromisoformat(entry["seen"]["time"])
    assert abs(first - datetime.now(timezone.utc)) < timedelta(minutes=5)
    entry["seen"]["time"] = (first - timedelta(hours=2)).isoformat(timespec="seconds")
    path.write_text(json.dumps(document))
    assert path.stat().st_mode & 0o777 == 0o600

    due = run(UPDATE_MIN_AGE="2")
    assert due.returncode == 0, explain(due)
    assert web(containers, deployed)[1] == new and pinned(deployed) == new
    assert [record["outcome"] for record in history(cipug)] == ["updated"]
