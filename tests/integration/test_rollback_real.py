"""Rolling back on the real stack: the automatic rollback of an image that does not stay up, and
`cipug rollback` of data and image together (and of the image alone) after a real update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import realstack
from tests.support.realstack import EXIT_COMMAND, Service, deploy, explain, snapper_snapshots, without_notes

pytestmark = pytest.mark.integration

# The scenarios about cipug's own behaviour run on every compose tool, with the matching CONTAINER_TOOL.
EVERY_TOOL = pytest.mark.parametrize("engine", realstack.COMPOSE_TOOLS, indirect=True)

RESTART_FAILED = 34


def history(cipug) -> list[dict]:
    return [json.loads(line) for line in Path(cipug.settings["HISTORY_FILE"]).read_text().splitlines()]


def running_digest(engine, service: Service) -> str:
    """The image digest of the service's one container, which must be running."""
    web = engine.containers(service.name)["web"]
    assert web["State"]["Running"], web["State"]
    return web["ImageDigest"]


@EVERY_TOOL
def test_image_that_exits_at_once_is_rolled_back_automatically(engine, services, cipug, tag):
    deployed = deploy(engine, services, "autoback", {"web": tag("web")})
    service = deployed.service
    old_env = service.env_file.read_bytes()
    dying = engine.push_image(deployed.tags["web"], EXIT_COMMAND)

    result = cipug.run(HEALTH_TIMEOUT="5")

    assert result.returncode == RESTART_FAILED, explain(result)
    assert service.env_file.read_bytes() == old_env
    assert running_digest(engine, service) == deployed.digests["web"]
    [record] = history(cipug)
    assert record["outcome"] == "rolled back"
    assert record["old"].endswith(deployed.digests["web"]) and record["new"].endswith(dying)
    assert f"undochange {record['snapshot']}..0" in result.stderr


def update_then_write(engine, services, cipug, tag, name: str):
    """A service updated by cipug from its first image to a second, with data written before and after."""
    deployed = deploy(engine, services, name, {"web": tag("web")})
    service = deployed.service
    data = service.folder / "data.txt"
    data.write_text("before the update\n")
    old_env = service.env_file.read_bytes()
    new_digest = engine.push_image(deployed.tags["web"])
    updated = cipug.run()
    assert updated.returncode == 0, explain(updated)
    assert running_digest(engine, service) == new_digest
    data.write_text("written after the update\n")
    (service.folder / "new.txt").write_text("new since the update\n")
    return deployed, old_env, new_digest


@EVERY_TOOL
def test_rollback_restores_data_and_image_together(engine, services, cipug, tag):
    deployed, old_env, new_digest = update_then_write(engine, services, cipug, tag, "manual")
    service = deployed.service
    [update_snapshot] = snapper_snapshots(service.snapper_config)

    result = cipug.run("rollback", service.name, "--yes")

    assert result.returncode == 0, explain(result)
    assert service.env_file.read_bytes() == old_env
    assert (service.folder / "data.txt").read_text() == "before the update\n"
    assert not (service.folder / "new.txt").exists()
    # Pruned after the update, so pulled again.
    assert running_digest(engine, service) == deployed.digests["web"]
    # What the rollback replaced is kept in a snapshot of its own.
    [_, safety] = snapper_snapshots(service.snapper_config)
    assert service.snapshot_file(safety["number"], "data.txt").read_text() == "written after the update\n"
    updated, rolled_back = history(cipug)
    assert updated["snapshot"] == update_snapshot["number"]
    assert (rolled_back["outcome"], rolled_back["snapshot"]) == ("rolled back", safety["number"])
    assert rolled_back["old"].endswith(new_digest) and rolled_back["new"].endswith(deployed.digests["web"])
    assert rolled_back["detail"] == f"folder restored to snapshot {update_snapshot['number']}"


@EVERY_TOOL
def test_image_only_rollback_keeps_the_data(engine, services, cipug, tag):
    deployed, old_env, new_digest = update_then_write(engine, services, cipug, tag, "imageonly")
    service = deployed.service

    result = cipug.run("rollback", service.name, "--image-only", "--yes")

    assert result.returncode == 0, explain(result)
    # The old pin, now with the note of its version.
    assert without_notes(service.env_file.read_text()).encode() == old_env
    assert (service.folder / "data.txt").read_text() == "written after the update\n"
    assert (service.folder / "new.txt").exists()
    assert running_digest(engine, service) == deployed.digests["web"]
    assert [record["outcome"] for record in history(cipug)] == ["updated", "rolled back"]


@pytest.mark.parametrize("engine", ["podman-compose", "docker compose"], indirect=True)
@pytest.mark.parametrize("image_only", [False, True], ids=["folder", "image-only"])
def test_a_rollback_with_the_registry_stopped_restarts_the_kept_old_image(engine, services, cipug, workdir, image_only):
    with realstack.Registry(workdir / "registry") as own:
        engine.allow_registry(own.host)
        tagged = f"{own.host}/{services.token}/web:latest"
        old = engine.push_image(tagged)
        service = services.add("offline", realstack.env_text({"web": tagged}, {"web": old}),
                               realstack.compose_text("web"), start=True)
        engine.push_image(tagged)
        updated = cipug.run()
        assert updated.returncode == 0, explain(updated)
    # The registry is gone; the update pruned the images nothing uses, but KEEP_IMAGES kept the old one.
    images = realstack.run([*engine.container_tool, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                           env=engine.env).stdout.split()
    assert f"{realstack.repository(tagged)}:cipug-keep-{old[7:23]}" in images

    result = cipug.run("rollback", service.name, "--yes", *(["--image-only"] if image_only else []))

    assert result.returncode == 0, explain(result)
    assert running_digest(engine, service) == old
    assert without_notes(service.env_file.read_text()) == realstack.env_text({"web": tagged}, {"web": old})
