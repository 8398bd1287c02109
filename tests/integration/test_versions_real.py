"""Image versions on the real stack: an update says, and history keeps, which version ran before and after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import realstack
from tests.support.realstack import deploy, explain, push_versioned, repository, snapper_snapshots, var

pytestmark = pytest.mark.integration


def test_an_update_names_the_versions_and_history_keeps_them(containers, services, cipug, tag, workdir):
    deployed = deploy(containers, services, "versioned", {"web": tag("web")})
    push_versioned(containers, deployed.tags["web"], "29.0.4", workdir)

    result = cipug.run()

    assert result.returncode == 0, explain(result)
    [record] = [json.loads(line) for line in Path(cipug.settings["HISTORY_FILE"]).read_text().splitlines()]
    assert record["new_version"] == "29.0.4"
    # The image it ran before has no label: its build time stands for its version.
    assert record["old_version"].startswith("built ")
    assert f"{record['old_version']} → 29.0.4" in result.stdout


@pytest.mark.parametrize("engine", realstack.COMPOSE_TOOLS, indirect=True)
def test_the_version_noted_after_the_pin_tells_what_ran_and_every_compose_tool_reads_the_pin(
        engine, containers, services, cipug, tag, workdir):
    deployed = deploy(engine, services, "noted", {"web": tag("web")})
    service, tagged = deployed.service, deployed.tags["web"]
    first = push_versioned(containers, tagged, "29.0.4", workdir)

    result = cipug.run()

    assert result.returncode == 0, explain(result)
    line = f"{var('web', 'HASHED')}={repository(tagged)}@{first} # cipug: version 29.0.4\n"
    assert line in service.env_file.read_text()
    # The compose tool took the pin without the note: the container runs exactly that image.
    web = engine.containers(service.name)["web"]
    assert web["State"]["Running"] and web["ImageDigest"] == first
    [before_first] = snapper_snapshots(service.snapper_config)
    assert before_first["description"].endswith(" -> 29.0.4)")

    second = push_versioned(containers, tagged, "29.0.5", workdir)
    moved = cipug.run()

    assert moved.returncode == 0, explain(moved)
    assert f"@{second} # cipug: version 29.0.5\n" in service.env_file.read_text()
    assert engine.containers(service.name)["web"]["ImageDigest"] == second
    before_second = snapper_snapshots(service.snapper_config)[-1]
    assert "(29.0.4 -> 29.0.5)" in before_second["description"]
    # Without cipug, the snapshot's .env says which version ran before.
    assert line in service.snapshot_file(before_second["number"]).read_text()

    # Nothing moved: the notes are read past by cipug too, and nothing is restarted.
    container = engine.containers(service.name)["web"]["Id"]
    steady = cipug.run()
    assert steady.returncode == 0, explain(steady)
    assert engine.containers(service.name)["web"]["Id"] == container
    assert "drift" not in steady.stdout + steady.stderr


def test_check_names_the_version_available_from_the_registry_and_the_one_running(
        containers, services, cipug, tag, workdir):
    deployed = deploy(containers, services, "checked", {"web": tag("web")})
    tagged = deployed.tags["web"]
    running = push_versioned(containers, tagged, "1.0.0", workdir)
    assert (pinned := cipug.run()).returncode == 0, explain(pinned)
    available = push_versioned(containers, tagged, "1.1.0", workdir)

    for resolver in ("registry", "skopeo"):
        result = cipug.run("check", "--json", RESOLVER=resolver, CACHE_DURATION="0")
        assert result.returncode == 1, explain(result)
        [entry] = json.loads(result.stdout)[0]["entries"]
        assert (entry["current"], entry["current_version"]) == (f"{repository(tagged)}@{running}", "1.0.0")
        assert (entry["available"], entry["available_version"]) == (f"{repository(tagged)}@{available}", "1.1.0")
    text = cipug.run("check", CACHE_DURATION="0")
    assert f"(was {repository(tagged)}@{running}; 1.0.0 → 1.1.0)" in text.stdout
    # HEAD requests only: the moved digest's version is not known, the running one's is, from history.
    quiet = cipug.run("check", "--json", CACHE_DURATION="0", CHECK_VERSIONS="false")
    [entry] = json.loads(quiet.stdout)[0]["entries"]
    assert (entry["current_version"], entry["available_version"]) == ("1.0.0", None)
