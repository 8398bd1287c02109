"""cipug end to end against a real registry, skopeo, btrfs + snapper and podman-compose.

Every test asserts on what is really there afterwards: .env bytes, snapper
snapshots, the containers the compose tool runs and the digests of their images.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from tests.support import realstack
from tests.support.realstack import (Service, compose_text, deploy, env_text, explain, repository, snapper_snapshots, var,
                                     without_notes)

pytestmark = pytest.mark.integration

# The scenarios about cipug's own behaviour run on every compose tool, with the matching CONTAINER_TOOL.
EVERY_TOOL = pytest.mark.parametrize("engine", realstack.COMPOSE_TOOLS, indirect=True)

RESOLVE_FAILED, ENV_FILE_INVALID, SNAPSHOT_FAILED, ENV_WRITE_FAILED, PULL_FAILED = 35, 26, 31, 32, 33
LOCKED, SNAPSHOTS_STALE = 11, 40


def unnoted(path: Path) -> bytes:
    """A .env's bytes without the version notes cipug writes after its pins (test_versions_real checks those)."""
    return without_notes(path.read_bytes().decode()).encode()


def with_digest(env: bytes, compose_service: str, old: str, new: str) -> bytes:
    """`env` with one HASHED line's digest replaced, as an update of that image should leave it."""
    line = f"{var(compose_service, 'HASHED')}=".encode()
    assert env.count(line) == 1 and env.count(old.encode()) == 1
    return env.replace(old.encode(), new.encode())


def state(engine, service: Service) -> tuple[bytes, dict[str, tuple[str, str, bool]]]:
    """.env bytes and, per compose service, container id, image digest and whether it runs."""
    running = {
        name: (item["Id"], item["ImageDigest"], item["State"]["Running"])
        for name, item in engine.containers(service.name).items()
    }
    return service.env_file.read_bytes(), running


def assert_untouched(engine, service: Service, before) -> None:
    assert state(engine, service) == before
    assert all(is_running for _id, _digest, is_running in before[1].values())


# 1
@EVERY_TOOL
def test_first_run_pins_the_registry_digests_and_runs_them(engine, services, cipug, tag):
    tags = {"web": tag("web"), "worker": tag("worker")}
    digests = {name: engine.push_image(tagged) for name, tagged in tags.items()}
    # Everything but the new HASHED lines must survive byte for byte, last line without newline included.
    env = (
        "# demo service\n"
        "export TZ=UTC\n"
        "\n"
        f"{var('web', 'TAGGED')}={tags['web']}\n"
        'GREETING="hello # not a comment"\n'
        f"{var('worker', 'TAGGED')}={tags['worker']}\n"
        "\n"
        "# the end\n"
        "LAST=1"
    )
    service = services.add("first", env, compose_text(*tags))

    result = cipug.run()

    assert result.returncode == 0, explain(result)
    expected = env
    for name, tagged in tags.items():
        in_registry = engine.inspect(tagged)
        assert in_registry["Digest"] == digests[name]
        pinned = f"{in_registry['Name']}@{in_registry['Digest']}"
        expected = expected.replace(f"={tagged}\n", f"={tagged}\n{var(name, 'HASHED')}={pinned}\n")
    assert unnoted(service.env_file) == expected.encode()
    running = engine.containers(service.name)
    for name, tagged in tags.items():
        assert running[name]["State"]["Running"]
        assert running[name]["ImageDigest"] == digests[name]
        assert running[name]["ImageName"] == f"{repository(tagged)}@{digests[name]}"
    snapshots = snapper_snapshots(service.snapper_config)
    assert len(snapshots) == 1
    assert all(repository(tagged) in snapshots[0]["description"] for tagged in tags.values())


# 2
@EVERY_TOOL
def test_second_run_without_moved_tags_touches_nothing(engine, services, cipug, tag):
    web = tag("web")
    engine.push_image(web)
    service = services.add("steady", env_text({"web": web}), compose_text("web"))
    first = cipug.run()
    assert first.returncode == 0, explain(first)
    stat = service.env_file.stat()
    before = state(engine, service)
    snapshots = snapper_snapshots(service.snapper_config)

    result = cipug.run()

    assert result.returncode == 0, explain(result)
    after = service.env_file.stat()
    assert (after.st_mtime_ns, after.st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert_untouched(engine, service, before)
    assert snapper_snapshots(service.snapper_config) == snapshots


# 3
@EVERY_TOOL
def test_moved_tag_is_snapshotted_rewritten_pulled_and_restarted(engine, services, cipug, tag):
    deployed = deploy(engine, services, "moving", {"web": tag("web")})
    service = deployed.service
    old_env = service.env_file.read_bytes()
    old_container = engine.containers(service.name)["web"]
    new_digest = engine.push_image(deployed.tags["web"])

    result = cipug.run()

    assert result.returncode == 0, explain(result)
    assert unnoted(service.env_file) == with_digest(old_env, "web", deployed.digests["web"], new_digest)
    snapshots = snapper_snapshots(service.snapper_config)
    assert len(snapshots) == 1
    assert service.snapshot_file(snapshots[0]["number"]).read_bytes() == old_env
    new_container = engine.containers(service.name)["web"]
    assert new_container["Id"] != old_container["Id"]
    assert new_container["State"]["Running"]
    assert new_container["ImageDigest"] == new_digest


# 4
@EVERY_TOOL
def test_only_the_service_with_a_moved_image_changes(engine, services, cipug, tag):
    excluded = deploy(engine, services, "excluded", {"web": tag("web")})
    updated = deploy(engine, services, "updated", {"web": tag("web"), "worker": tag("worker")})
    steady = deploy(engine, services, "steady", {"web": tag("web")})
    untouched = {
        d.service.name: (d.service, state(engine, d.service), d.service.env_file.stat().st_mtime_ns)
        for d in (excluded, steady)
    }
    old_env = unnoted(updated.service.env_file)
    engine.push_image(excluded.tags["web"])  # moved too, but filtered out
    new_digest = engine.push_image(updated.tags["web"])

    result = cipug.run(SERVICES_FILTER_EXCLUDE=excluded.service.name)

    assert result.returncode == 0, explain(result)
    for service, before, mtime in untouched.values():
        assert_untouched(engine, service, before)
        assert service.env_file.stat().st_mtime_ns == mtime
        assert snapper_snapshots(service.snapper_config) == []
    assert unnoted(updated.service.env_file) == with_digest(old_env, "web", updated.digests["web"], new_digest)
    assert len(snapper_snapshots(updated.service.snapper_config)) == 1
    running = engine.containers(updated.service.name)
    assert running["web"]["ImageDigest"] == new_digest
    assert running["worker"]["ImageDigest"] == updated.digests["worker"]
    assert all(item["State"]["Running"] for item in running.values())


# 5: faults. Each leaves .env byte-identical and the old containers running.
@EVERY_TOOL
def test_registry_down_fails_with_35_naming_the_reference(engine, services, cipug, workdir):
    with realstack.Registry(workdir / "registry") as own:
        engine.allow_registry(own.host)
        web = f"{own.host}/{services.token}/web:latest"
        deployed = deploy(engine, services, "unreachable", {"web": web})
        before = state(engine, deployed.service)
    result = cipug.run()

    assert result.returncode == RESOLVE_FAILED, explain(result)
    assert web in result.stderr
    assert_untouched(engine, deployed.service, before)


@EVERY_TOOL
def test_tag_missing_in_the_registry_fails_with_35(engine, services, cipug, tag):
    web = tag("web")
    digest = engine.push_image(web)
    missing = f"{repository(web)}:no-such-tag"
    service = services.add("missingtag", env_text({"web": missing}, {"web": digest}), compose_text("web"), start=True)
    before = state(engine, service)

    result = cipug.run()

    assert result.returncode == RESOLVE_FAILED, explain(result)
    assert missing in result.stderr
    assert_untouched(engine, service, before)


@EVERY_TOOL
def test_failing_pull_fails_with_33_and_restores_env(engine, registry, services, cipug, tag):
    deployed = deploy(engine, services, "pullfails", {"web": tag("web")})
    web = deployed.tags["web"]
    engine.push_image(web)
    # The new manifest still resolves, but the registry cannot serve its layer.
    for layer in engine.inspect(web)["Layers"]:
        registry.delete_blob(layer)
    before = state(engine, deployed.service)

    result = cipug.run()

    assert result.returncode == PULL_FAILED, explain(result)
    assert_untouched(engine, deployed.service, before)


@EVERY_TOOL
@pytest.mark.parametrize("name, options, broken, code", [
    ("nosnapper", {"snapper": False}, "", SNAPSHOT_FAILED),
    # A quote that never closes: no dotenv syntax accepts it. Written after the deploy, as docker compose
    # would not start the service with it.
    ("badenv", {}, 'BROKEN="no closing quote\n', ENV_FILE_INVALID),
], ids=["no snapper config: 31", "unparsable .env: 26"])
def test_service_that_cannot_be_updated_is_left_untouched(engine, services, cipug, tag, name, options, broken, code):
    deployed = deploy(engine, services, name, {"web": tag("web")}, **options)
    with deployed.service.env_file.open("a") as env:
        env.write(broken)
    engine.push_image(deployed.tags["web"])
    before = state(engine, deployed.service)

    result = cipug.run()

    assert result.returncode == code, explain(result)
    assert_untouched(engine, deployed.service, before)


@EVERY_TOOL
def test_read_only_service_folder_fails_with_32(engine, services, cipug, tag):
    deployed = deploy(engine, services, "readonly", {"web": tag("web")})
    engine.push_image(deployed.tags["web"])
    # Permission bits do not stop root; a read-only subvolume does.
    services.set_readonly(deployed.service)
    before = state(engine, deployed.service)

    result = cipug.run()

    assert result.returncode == ENV_WRITE_FAILED, explain(result)
    assert_untouched(engine, deployed.service, before)


# 6
def test_check_snapshots_passes_fresh_and_fails_stale(services, cipug, tag):
    service = services.add("checked", env_text({"web": tag("web")}), compose_text("web"))
    realstack.run([*realstack.SNAPPER, "-c", service.snapper_config, "create", "--description", "test"])

    fresh = cipug.run("--check-snapshots", SNAPSHOTS_DIR_SNAPPER=".snapshots")
    assert fresh.returncode == 0, explain(fresh)

    time.sleep(1)  # 0.0001 h is 0.36 s; snapper's dates have whole seconds
    stale = cipug.run("--check-snapshots", SNAPSHOTS_DIR_SNAPPER=".snapshots", SNAPSHOTS_MAX_AGE_SNAPPER="0.0001")
    assert stale.returncode == SNAPSHOTS_STALE, explain(stale)


# 7
@EVERY_TOOL
def test_concurrent_runs_one_updates_the_other_exits_11(engine, services, cipug, tag, workdir):
    web = tag("web")
    digest = engine.push_image(web)
    service = services.add("locked", env_text({"web": web}), compose_text("web"))
    env = service.env_file.read_bytes()
    # Holds the winner inside the lock long enough for the other run to meet it.
    slow_skopeo = workdir / "slow-skopeo"
    slow_skopeo.write_text(f'#!/bin/sh\nsleep 3\nexec {shlex.join(engine.skopeo)} "$@"\n')
    slow_skopeo.chmod(0o755)

    runs = [cipug.start(SKOPEO_TOOL=str(slow_skopeo)) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in runs]

    report = "\n".join(f"exit {p.returncode}\n{out}{err}" for p, (out, err) in zip(runs, outputs))
    assert sorted(process.returncode for process in runs) == [0, LOCKED], report
    assert unnoted(service.env_file) == env.replace(
        f"={web}\n".encode(), f"={web}\n{var('web', 'HASHED')}={repository(web)}@{digest}\n".encode()
    )
    assert len(snapper_snapshots(service.snapper_config)) == 1
    running = engine.containers(service.name)["web"]
    assert running["State"]["Running"] and running["ImageDigest"] == digest
    if cipug.cache_file.exists():
        json.loads(cipug.cache_file.read_text())


# RESTART=changed: only the compose services whose image changed are recreated.
@EVERY_TOOL
def test_restart_changed_recreates_only_the_moved_image_and_keeps_the_others_running(engine, services, cipug, tag):
    deployed = deploy(engine, services, "partial", {"web": tag("web"), "worker": tag("worker")})
    service = deployed.service
    before = engine.containers(service.name)
    new_digest = engine.push_image(deployed.tags["web"])

    result = cipug.run(RESTART="changed")

    assert result.returncode == 0, explain(result)
    after = engine.containers(service.name)
    assert after["worker"]["Id"] == before["worker"]["Id"] and after["worker"]["State"]["Running"]
    assert after["web"]["Id"] != before["web"]["Id"] and after["web"]["State"]["Running"]
    assert after["web"]["ImageDigest"] == new_digest
    assert after["worker"]["ImageDigest"] == deployed.digests["worker"]


@EVERY_TOOL
def test_restart_changed_rolls_back_only_the_recreated_service(engine, services, cipug, tag):
    deployed = deploy(engine, services, "partialback", {"web": tag("web"), "worker": tag("worker")})
    service = deployed.service
    old_env = service.env_file.read_bytes()
    worker = engine.containers(service.name)["worker"]["Id"]
    engine.push_image(deployed.tags["web"], realstack.EXIT_COMMAND)

    result = cipug.run(RESTART="changed", HEALTH_TIMEOUT="5")

    assert result.returncode == 34, explain(result)
    assert service.env_file.read_bytes() == old_env
    after = engine.containers(service.name)
    assert after["worker"]["Id"] == worker and after["worker"]["State"]["Running"]
    assert after["web"]["State"]["Running"] and after["web"]["ImageDigest"] == deployed.digests["web"]
