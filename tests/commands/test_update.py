"""The update workflow, with skopeo, snapper, the compose tool and podman faked by pytest-subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.fakestack import DIGEST_A, DIGEST_B, DIGEST_C, WEB_ENV, containers

from cipug.errors import ExitCode
from cipug.settings import load_settings
from cipug.errors import Interrupted
from cipug.log import Log
from cipug.commands.update import run_update
from cipug.plan import is_tagged_key


def test_first_run_pins_snapshots_writes_pulls_and_restarts_in_that_order(stack):
    env_file = stack.service("web", WEB_ENV)
    env_file.chmod(0o640)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.full_update("web")
    stack.snapper({"web-config": "web"}, number=12)
    stack.prune()

    assert stack.run() == ExitCode.OK

    assert env_file.read_text() == WEB_ENV.replace(
        "# follows latest\n", f"# follows latest\nSERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}\n")
    assert env_file.stat().st_mode & 0o777 == 0o640
    steps = [call[:2] if call[0] == "skopeo" else call for call in stack.calls()]
    assert [" ".join(step[:6]) for step in steps] == [
        "skopeo inspect",
        f"env SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A} podman-compose -f compose.yml ps",
        "snapper --jsonout list-configs",
        "snapper -c web-config create --cleanup-algorithm number",
        "podman-compose -f compose.yml pull",
        f"podman image inspect docker.io/library/nginx@{DIGEST_A}",
        # Once more, for the version of the image now local.
        f"podman image inspect docker.io/library/nginx@{DIGEST_A}",
        "podman-compose -f compose.yml down",
        "podman-compose -f compose.yml up -d",
        "podman image ls --format {{.Repository}}:{{.Tag}}",
        f"podman tag docker.io/library/nginx@{DIGEST_A} docker.io/library/nginx:cipug-keep-{DIGEST_A[7:23]}",
        "podman image prune -f",
    ]
    description = stack.calls()[3][stack.calls()[3].index("--description") + 1]
    assert "nginx:latest" in description and "docker.io/library/nginx@sha256:aaaa" in description
    [record] = stack.history()
    assert (record.service, record.entry, record.old, record.new, record.snapshot, record.outcome) == (
        "web", "SERVICE_WEB_IMAGE_HASHED", None, f"docker.io/library/nginx@{DIGEST_A}", 12, "updated")


def test_nothing_moved_touches_nothing(stack):
    text = WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}\n"
    env_file = stack.service("web", text)
    before = env_file.stat().st_mtime_ns
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)

    assert stack.run() == ExitCode.OK

    assert env_file.read_text() == text and env_file.stat().st_mtime_ns == before
    assert [call[0] for call in stack.calls()] == ["skopeo"]
    assert stack.history() == []
    assert "web: up to date" in stack.out.getvalue()


def test_moved_digest_rewrites_only_that_line(stack):
    text = (f"SERVICE_WEB_IMAGE_TAGGED=nginx:latest\nSERVICE_WEB_IMAGE_HASHED=\"docker.io/library/nginx@{DIGEST_A}\"\n"
            f"SERVICE_DB_IMAGE_TAGGED=postgres:16\nSERVICE_DB_IMAGE_HASHED=docker.io/library/postgres@{DIGEST_C}\n")
    env_file = stack.service("web", text)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    stack.skopeo("postgres:16", "docker.io/library/postgres", DIGEST_C)
    stack.full_update("web")

    assert stack.run(service_snapshot="false", prune_images="no") == ExitCode.OK

    assert env_file.read_text() == text.replace(DIGEST_A, DIGEST_B)
    [record] = stack.history()
    assert record.old == f"docker.io/library/nginx@{DIGEST_A}" and record.snapshot is None


def test_interpolated_reference_is_resolved(stack):
    env_file = stack.service("db", "DB_IMAGE=postgres\nSERVICE_NEXT_CLOUD_DB_IMAGE_TAGGED=${DB_IMAGE}:16\n")
    stack.skopeo("postgres:16", "docker.io/library/postgres", DIGEST_A)
    stack.full_update("db")

    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.OK
    assert f"SERVICE_NEXT_CLOUD_DB_IMAGE_HASHED=docker.io/library/postgres@{DIGEST_A}\n" in env_file.read_text()


def test_pull_failure_puts_the_old_env_back_and_keeps_old_containers(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps")
    stack.compose("web", "pull", returncode=1)
    stack.snapper({"web": "web"})

    assert stack.run(prune_images="false") == ExitCode.PULL_FAILED

    assert env_file.read_text() == WEB_ENV
    assert not any(call[-1] in ("down", "-d") for call in stack.calls())
    assert stack.err.getvalue() == ("cipug: error: web: pull failed: `podman-compose -f compose.yml pull` exited 1: "
                                    "compose said no; the old pins were put back in .env\n")
    assert [record.outcome for record in stack.history()] == ["failed"]


def test_pull_that_exits_0_without_bringing_the_image_counts_as_failed(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps")
    stack.fp.register(["podman-compose", "-f", "compose.yml", "pull"])
    stack.fp.register(["podman", "image", "inspect", f"docker.io/library/nginx@{DIGEST_A}"], returncode=125)

    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.PULL_FAILED
    assert env_file.read_text() == WEB_ENV
    assert f"docker.io/library/nginx@{DIGEST_A} not present" in stack.err.getvalue()
    assert not any(call[-1] in ("down", "-d") for call in stack.calls())


PINNED_B = WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_B}\n"


def test_restart_failure_rolls_back_to_the_old_images(stack):
    env_file = stack.service("web", PINNED_B)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps")
    stack.compose("web", "pull")
    stack.compose("web", "down", occurrences=2)
    seen_env: list[str] = []
    stack.compose("web", "up", "-d", returncode=1, callback=lambda process: seen_env.append(env_file.read_text()))
    stack.compose("web", "up", "-d", callback=lambda process: seen_env.append(env_file.read_text()))

    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.RESTART_FAILED

    assert env_file.read_text() == PINNED_B
    # The first start saw the new pin, the second (the rollback) the old .env again.
    assert DIGEST_A in seen_env[0] and seen_env[1] == PINNED_B
    assert [record.outcome for record in stack.history()] == ["rolled back"]
    assert "rolled back to the old images" in stack.err.getvalue()


def test_a_first_pin_that_does_not_start_is_not_called_rolled_back(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    for step in (("ps",), ("pull",)):
        stack.compose("web", *step)
    stack.compose("web", "down", occurrences=2)
    stack.compose("web", "up", "-d", returncode=1)

    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.RESTART_FAILED

    # No earlier pin: nothing to roll back to, so the service is stopped, and history says it failed.
    assert env_file.read_text() == WEB_ENV
    assert [call[-1] for call in stack.calls()][-2:] == ["-d", "down"]
    assert [record.outcome for record in stack.history()] == ["failed"]
    assert "SERVICE_WEB_IMAGE_HASHED had no earlier pin to go back to: the service was stopped" in stack.err.getvalue()


def test_restart_failure_without_auto_rollback_restores_env_but_does_not_restart(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    for step in (("ps",), ("pull",), ("down",)):
        stack.compose("web", *step)
    stack.compose("web", "up", "-d", returncode=1)

    code = stack.run(service_snapshot="false", prune_images="false", auto_rollback="false")

    assert code == ExitCode.RESTART_FAILED
    assert env_file.read_text() == WEB_ENV
    assert [call[-1] for call in stack.calls()].count("down") == 1
    assert [record.outcome for record in stack.history()] == ["failed"]


def test_service_that_does_not_come_up_is_rolled_back(stack):
    env_file = stack.service("web", PINNED_B)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    for step in (("ps",), ("pull",)):
        stack.compose("web", *step)
    stack.compose("web", "down", occurrences=2)
    stack.compose("web", "up", "-d", occurrences=2)
    label = f"label=com.docker.compose.project.working_dir={os.path.realpath(stack.root / 'web')}"
    stack.fp.register(["podman", "ps", "-a", "-q", "--filter", label], stdout="id0\n", occurrences=1000)
    stack.fp.register(["podman", "inspect", "id0"], stdout=containers(("exited", "")), occurrences=1000)

    code = stack.update(service_snapshot="false", prune_images="false", health_timeout="5")

    assert code == ExitCode.RESTART_FAILED
    assert stack.time.slept == [1] * 5
    assert env_file.read_text() == PINNED_B
    assert "web_app_0 is exited" in stack.err.getvalue()
    assert [record.outcome for record in stack.history()] == ["rolled back"]


def test_healthy_service_must_stay_up_for_two_polls(stack):
    stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.full_update("web")
    label = f"label=com.docker.compose.project.working_dir={os.path.realpath(stack.root / 'web')}"
    stack.fp.register(["podman", "ps", "-a", "-q", "--filter", label], stdout="id0\n", occurrences=10)
    for state in (("running", "starting"), ("running", "healthy"), ("running", "healthy")):
        stack.fp.register(["podman", "inspect", "id0"], stdout=containers(state))

    assert stack.update(service_snapshot="false", prune_images="false", health_timeout="30") == ExitCode.OK
    assert stack.time.slept == [1, 1]
    assert [call[:2] for call in stack.calls()].count(["podman", "inspect"]) == 3


def test_missing_snapper_config_is_31_and_nothing_changes(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps")
    stack.snapper({"other": "elsewhere"})

    assert stack.run() == ExitCode.SNAPSHOT_FAILED
    assert env_file.read_text() == WEB_ENV
    assert "no snapper config has" in stack.err.getvalue() and "create-config" in stack.err.getvalue()


def test_compose_tool_not_working_is_30(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps", returncode=2)

    assert stack.run() == ExitCode.COMPOSE_UNUSABLE
    assert env_file.read_text() == WEB_ENV
    assert not any(call[0] == "snapper" for call in stack.calls())


def test_unresolvable_tag_fails_its_service_only(stack):
    broken = stack.service("broken", "SERVICE_X_IMAGE_TAGGED=nosuch:tag\n")
    fine = stack.service("web", WEB_ENV)
    stack.fp.register(["skopeo", "inspect", "--no-tags", "docker://nosuch:tag"], returncode=1,
                      stderr='time="2026" level=fatal msg="Error reading manifest tag in docker.io/library/nosuch: manifest unknown"\n')
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.full_update("web")

    assert stack.run(service_snapshot="0", prune_images="0") == ExitCode.RESOLVE_FAILED
    assert broken.read_text() == "SERVICE_X_IMAGE_TAGGED=nosuch:tag\n"
    assert "HASHED" in fine.read_text()
    assert "broken: nosuch:tag could not be resolved: Error reading manifest tag" in stack.err.getvalue()


def test_invalid_digest_from_skopeo_is_never_written(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", "sha256:ABC")

    assert stack.run() == ExitCode.RESOLVE_FAILED
    assert env_file.read_text() == WEB_ENV


def test_malformed_env_names_file_and_line_and_others_still_update(stack):
    bad = stack.service("bad", "GOOD=1\nthis is not an assignment\nSERVICE_X_IMAGE_TAGGED=a:b\n")
    stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.full_update("web")

    assert stack.run(service_snapshot="0", prune_images="0") == ExitCode.ENV_FILE_INVALID
    assert f"{bad}:2:" in stack.err.getvalue()
    assert [call for call in stack.calls() if call[0] == "skopeo"] == [
        ["skopeo", "inspect", "--no-tags", "docker://nginx:latest"]]


def test_different_failures_in_one_run_exit_255(stack):
    stack.service("bad", "not valid\n")
    stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps", returncode=1)

    assert stack.run() == ExitCode.SEVERAL_ERRORS


def test_filters_include_and_exclude(stack):
    for name in ("a", "b", "c"):
        stack.service(name, f"SERVICE_{name.upper()}_IMAGE_TAGGED={name}:1\n")
    stack.skopeo("b:1", "docker.io/library/b", DIGEST_A)

    code = stack.run(services_filter="a,b", services_filter_exclude="a", service_pull="false",
                     service_stop_start="false", service_snapshot="false", prune_images="false")

    assert code == ExitCode.OK
    assert "HASHED" in (stack.root / "b" / ".env").read_text()
    assert "HASHED" not in (stack.root / "a" / ".env").read_text() + (stack.root / "c" / ".env").read_text()
    assert [call[-1] for call in stack.calls()] == ["docker://b:1"]


def test_folder_without_compose_file_is_not_a_service(stack):
    stack.service("web", WEB_ENV)
    (stack.root / "web" / "compose.yml").unlink()

    assert stack.run() == ExitCode.OK
    assert stack.calls() == []


def test_missing_skopeo_is_10_before_anything_runs(stack):
    env_file = stack.service("web", WEB_ENV)
    (stack.tmp_path / "bin" / "skopeo").unlink()

    assert stack.run() == ExitCode.TOOL_MISSING
    assert stack.calls() == [] and env_file.read_text() == WEB_ENV
    assert "required tool not found on PATH: skopeo" in stack.err.getvalue()


def test_missing_snapper_is_10_before_any_service_is_touched(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    (stack.tmp_path / "bin" / "snapper").unlink()

    assert stack.run() == ExitCode.TOOL_MISSING
    assert [call[0] for call in stack.calls()] == ["skopeo"] and env_file.read_text() == WEB_ENV
    assert "snapper" in stack.err.getvalue()


def test_run_with_nothing_to_look_up_or_change_needs_no_tools(stack):
    stack.service("web", WEB_ENV + f"SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    assert stack.run() == ExitCode.OK
    for tool in ("skopeo", "snapper", "podman", "podman-compose"):
        (stack.tmp_path / "bin" / tool).unlink()

    # Served from the cache, unchanged: a timer run on a machine whose tools are being upgraded still passes.
    assert stack.run() == ExitCode.OK
    assert len(stack.calls()) == 1


def test_systemd_method_restarts_the_unit(stack):
    stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps")
    stack.compose("web", "pull")
    stack.fp.register(["systemctl", "--user", "restart", "podman-compose@web.service"])

    code = stack.run(stop_start_method="systemd-user", service_snapshot="false", prune_images="false")
    assert code == ExitCode.OK
    assert stack.calls()[-1] == ["systemctl", "--user", "restart", "podman-compose@web.service"]


def test_docker_compose_and_other_env_file_name(stack):
    folder = stack.root / "web"
    folder.mkdir(parents=True)
    (folder / "docker-compose.yaml").write_text("services: {}\n")
    (folder / "images.env").write_text("SERVICE_WEB_IMAGE_TAGGED=nginx\n")
    stack.skopeo("nginx", "docker.io/library/nginx", DIGEST_A)
    stack.fp.register(["env", f"SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}", "docker", "compose",
                       "-f", "docker-compose.yaml", "--env-file", "images.env", "ps"])
    for step in (("pull",), ("down",), ("up", "-d")):
        stack.fp.register(["docker", "compose", "-f", "docker-compose.yaml", "--env-file", "images.env", *step])
    stack.fp.register(["docker", "image", "inspect", f"docker.io/library/nginx@{DIGEST_A}"], occurrences=2)

    code = stack.run(compose_tool="docker compose", container_tool="docker", compose_file_name="docker-compose.yaml",
                     env_file_name="images.env", service_snapshot="false", prune_images="false")
    assert code == ExitCode.OK
    assert f"nginx@{DIGEST_A}" in (folder / "images.env").read_text()


def test_cache_avoids_a_second_lookup_and_expires(stack):
    stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A, occurrences=2)
    quiet = {"service_pull": "false", "service_stop_start": "false", "service_snapshot": "false",
             "prune_images": "false"}

    assert stack.run(**quiet) == ExitCode.OK
    assert stack.run(**quiet) == ExitCode.OK
    assert len([call for call in stack.calls() if call[0] == "skopeo"]) == 1
    assert stack.run(cache_duration="0", **quiet) == ExitCode.OK
    assert len([call for call in stack.calls() if call[0] == "skopeo"]) == 2


def test_dry_run_changes_nothing(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    config = load_settings({**stack.env}, cwd=stack.tmp_path)

    assert run_update(config, Log(1, stack.out, stack.err), dry_run=True) == ExitCode.OK
    assert env_file.read_text() == WEB_ENV
    assert [call[0] for call in stack.calls()] == ["skopeo"]
    assert f"web: would set SERVICE_WEB_IMAGE_HASHED=docker.io/library/nginx@{DIGEST_A}" in stack.out.getvalue()


def test_env_edited_during_the_run_is_left_alone(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps", callback=lambda process: env_file.write_text(WEB_ENV + "NEW=1\n"))

    assert stack.run(service_snapshot="false") == ExitCode.ENV_WRITE_FAILED
    assert env_file.read_text() == WEB_ENV + "NEW=1\n"
    assert "changed while cipug was running" in stack.err.getvalue()


def test_unwritable_env_folder_is_32_and_env_unchanged(stack, monkeypatch):
    env_file = stack.service("web", WEB_ENV)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.compose("web", "ps")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    assert stack.run(service_snapshot="false") == ExitCode.ENV_WRITE_FAILED
    assert env_file.read_text() == WEB_ENV
    assert not any(call[-1] == "pull" for call in stack.calls())


def test_sigterm_during_pull_puts_the_old_env_back_and_stops(stack):
    env_file = stack.service("web", WEB_ENV)
    stack.service("zzz", "SERVICE_Z_IMAGE_TAGGED=z:1\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.skopeo("z:1", "docker.io/library/z", DIGEST_B)
    stack.compose("web", "ps")

    def interrupt(process):
        raise Interrupted("SIGTERM")

    stack.compose("web", "pull", callback=interrupt)

    assert stack.run(service_snapshot="false") == ExitCode.INTERRUPTED
    assert env_file.read_text() == WEB_ENV
    assert (stack.root / "zzz" / ".env").read_text() == "SERVICE_Z_IMAGE_TAGGED=z:1\n"
    assert [record.outcome for record in stack.history()] == ["failed"]


def test_second_run_while_one_holds_the_lock_exits_11(stack):
    stack.service("web", WEB_ENV)
    lock_path = stack.root / ".cipug.lock"
    stack.fp.allow_unregistered(True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_EX);"
         " print('locked', flush=True); time.sleep(30)", str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert stack.run() == ExitCode.LOCKED
    finally:
        holder.kill()
        holder.wait()
    assert "another cipug run holds the lock" in stack.err.getvalue()


@pytest.mark.parametrize("key, tagged", [
    ("SERVICE_WEB_IMAGE_TAGGED", True),
    ("SERVICE_my_app2_IMAGE_TAGGED", True),
    ("SERVICE_A_B_IMAGE_TAGGED", True),
    ("SERVICE__IMAGE_TAGGED", False),
    ("SERVICE_IMAGE_TAGGED", False),
    ("SERVICE_A.B_IMAGE_TAGGED", False),
    ("SERVICE_A-B_IMAGE_TAGGED", False),
    ("MY_SERVICE_WEB_IMAGE_TAGGED", False),
    ("SERVICE_WEB_IMAGE_TAGGED_OLD", False),
    ("SERVICE_WEB_IMAGE_HASHED", False),
    ("service_web_image_tagged", False),
])
def test_which_keys_name_a_tagged_image(key, tagged):
    assert is_tagged_key(key) is tagged


def inspected(**versions: str) -> str:
    """`image inspect` output for images by digest: their version labels."""
    return json.dumps([{"Labels": {"org.opencontainers.image.version": version}, "Created": "2026-01-01T00:00:00Z",
                        "RepoDigests": [f"docker.io/library/nginx@{digest}"]} for digest, version in versions.items()])


def test_the_versions_are_noted_after_the_pin_in_the_snapshot_description_and_said(stack):
    pin_a, pin_b = (f"docker.io/library/nginx@{digest}" for digest in (DIGEST_A, DIGEST_B))
    text = f"SERVICE_WEB_IMAGE_TAGGED=nginx:latest\nSERVICE_WEB_IMAGE_HASHED={pin_a} # cipug: version 1.27.1\nA=1\n"
    env_file = stack.service("web", text)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    stack.fp.register(["podman", "image", "inspect", pin_a, pin_b],
                      stdout=inspected(**{DIGEST_A: "1.27.1", DIGEST_B: "1.27.2"}))
    stack.full_update("web")
    stack.snapper({"web-config": "web"}, number=12)
    stack.fp.register(["snapper", "-c", "web-config", "modify", "--description", stack.fp.any(min=1, max=1), "12"])

    assert stack.run(prune_images="false") == ExitCode.OK

    assert env_file.read_text() == text.replace(pin_a, pin_b).replace("1.27.1", "1.27.2")
    [modify] = [call for call in stack.calls() if "modify" in call]
    assert modify[modify.index("--description") + 1] == (
        f"cipug web: nginx:latest -> docker.io/library/nginx@{DIGEST_B[:19]} (1.27.1 -> 1.27.2)")
    assert f"web: SERVICE_WEB_IMAGE_HASHED 1.27.1 → 1.27.2 ({DIGEST_A[:19]} → {DIGEST_B[:19]})" in stack.out.getvalue()
    [record] = stack.history()
    assert (record.old_version, record.new_version) == ("1.27.1", "1.27.2")


def test_a_failed_restart_puts_back_the_pin_with_its_note_and_keeps_the_users_comments(stack):
    pin_a, pin_b = (f"docker.io/library/nginx@{digest}" for digest in (DIGEST_A, DIGEST_B))
    text = (f"SERVICE_WEB_IMAGE_TAGGED=nginx:latest\r\nSERVICE_WEB_IMAGE_HASHED=\"{pin_a}\"  # cipug: version 1.27.1\r\n"
            f"SERVICE_DB_IMAGE_TAGGED=postgres:16\r\nSERVICE_DB_IMAGE_HASHED=docker.io/library/postgres@{DIGEST_A} "
            "# pinned by hand\r\n")
    env_file = stack.service("web", text)
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_B)
    stack.skopeo("postgres:16", "docker.io/library/postgres", DIGEST_C)
    stack.fp.register(["podman", "image", "inspect", pin_a, pin_b, f"docker.io/library/postgres@{DIGEST_A}",
                       f"docker.io/library/postgres@{DIGEST_C}"], stdout=inspected(**{DIGEST_B: "2"}))
    for step in (("ps",), ("pull",)):
        stack.compose("web", *step)
    stack.compose("web", "down", occurrences=2)
    written = []
    stack.compose("web", "up", "-d", returncode=1, callback=lambda process: written.append(env_file.read_bytes()))
    stack.compose("web", "up", "-d")

    assert stack.run(service_snapshot="false", prune_images="false") == ExitCode.RESTART_FAILED

    # While the new images started: the new pins, cipug's note with the version, the user's comment kept.
    assert written == [text.replace(pin_a, pin_b).replace("  # cipug: version 1.27.1", " # cipug: version 2")
                       .replace(f"postgres@{DIGEST_A}", f"postgres@{DIGEST_C}").encode()]
    assert env_file.read_bytes() == text.encode()
