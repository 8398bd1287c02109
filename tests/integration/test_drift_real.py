"""Drift on the real stack: containers that do not run what .env pins are found, reported and, where a
restart brings them to their pins, restarted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import realstack
from tests.support.realstack import deploy, env_text, explain, repository, var

pytestmark = pytest.mark.integration
EVERY_TOOL = pytest.mark.parametrize("engine", realstack.COMPOSE_TOOLS, indirect=True)

DRIFT = 4


def history(cipug) -> list[dict]:
    path = Path(cipug.settings["HISTORY_FILE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@EVERY_TOOL
def test_a_service_running_another_digest_than_its_pin_is_reported_and_restarted_on_it(engine, services, cipug, tag):
    containers = engine
    deployed = deploy(containers, services, "drifting", {"web": tag("web")})
    service, old = deployed.service, deployed.digests["web"]
    # Pinned by hand to what the tag now points at, without restarting: .env and containers differ.
    new = containers.push_image(deployed.tags["web"])
    service.env_file.write_text(env_text(deployed.tags, {"web": new}))
    before = containers.containers(service.name)["web"]

    check = cipug.run("check", "--json")
    update = cipug.run()

    assert check.returncode == DRIFT, explain(check)
    [report] = json.loads(check.stdout)
    assert report["status"] == "drift" and report["drift"][0]["running"].endswith(old)
    assert update.returncode == 0, explain(update)
    after = containers.containers(service.name)["web"]
    assert after["Id"] != before["Id"] and after["ImageDigest"] == new and after["State"]["Running"]
    assert service.env_file.read_text() == env_text(deployed.tags, {"web": new})
    name = repository(deployed.tags["web"])
    assert [(record["outcome"], record["old"], record["new"]) for record in history(cipug)] == [
        ("repaired", f"{name}@{old}", f"{name}@{new}")]
    assert cipug.run("check").returncode == 0


@EVERY_TOOL
def test_a_compose_file_naming_the_tag_is_named_and_its_containers_left_running(engine, services, cipug, tag):
    containers = engine
    web = tag("web")
    digest = containers.push_image(web)
    compose = f"services:\n  web:\n    image: {web}\nnetworks:\n  default:\n    name: podman\n    external: true\n"
    service = services.add("tagged", env_text({"web": web}, {"web": digest}), compose, start=True)
    before = containers.containers(service.name)["web"]

    update = cipug.run()
    check = cipug.run("check")

    assert update.returncode == 0, explain(update)
    assert f"does not use ${{{var('web', 'HASHED')}}}" in update.stderr
    assert f"compose.yml:3: the `image:` of compose service web ({web}) uses none of" in update.stderr
    assert containers.containers(service.name)["web"]["Id"] == before["Id"]
    assert history(cipug) == []
    assert check.returncode == DRIFT, explain(check)
