"""cipug.drift: which containers run something other than what .env pins, and what check and update do about it."""

from __future__ import annotations

import json

from cipug.commands.check import run_check
from cipug.drift import find_drift
from cipug.errors import ExitCode
from cipug.log import Log
from cipug.plan import ImageEntry
from cipug.settings import load_settings
from tests.support.fakestack import DIGEST_A, DIGEST_B, PIN_A, TAGGED

A, B = DIGEST_A, DIGEST_B
WEB = ImageEntry("SERVICE_WEB_IMAGE_TAGGED", "SERVICE_WEB_IMAGE_HASHED", "nginx:latest", f"docker.io/library/nginx@{A}")


def podman(name: str, image: str, service: str = "web") -> dict:
    return {"Name": name, "ImageName": image, "Config": {"Labels": {"com.docker.compose.service": service}}}


def docker(name: str, image: str, service: str = "web") -> dict:
    return {"Name": f"/{name}", "Config": {"Image": image, "Labels": {"com.docker.compose.service": service}}}


def test_a_container_on_its_pin_is_no_drift_however_the_reference_is_spelled():
    assert find_drift([WEB], [podman("web_1", f"docker.io/library/nginx@{A}"), docker("web-1", f"nginx@{A}")]) == []


def test_a_container_on_another_digest_of_the_pinned_repository_drifts():
    [drift] = find_drift([WEB], [docker("web-1", f"nginx@{B}")])
    assert (drift.container, drift.entry, drift.tag) == ("web-1", WEB, False)
    assert drift.describe("compose.yml") == ("container web-1 runs sha256:bbbbbbbbbbbb, but SERVICE_WEB_IMAGE_HASHED "
                                            "pins sha256:aaaaaaaaaaaa")


def test_a_container_on_a_tag_names_the_compose_service_that_does_not_use_the_pin():
    [drift] = find_drift([WEB], [podman("proj_web_1", "docker.io/library/nginx:latest", "frontend")])
    assert drift.tag and drift.compose_service == "frontend"
    assert "compose service frontend in compose.yml does not use ${SERVICE_WEB_IMAGE_HASHED}" in drift.describe(
        "compose.yml")


def test_containers_of_other_repositories_and_unpinned_entries_are_not_cipugs_business():
    unpinned = WEB._replace(current=None)
    assert find_drift([WEB], [podman("db_1", "docker.io/library/postgres:16", "db")]) == []
    assert find_drift([unpinned], [podman("web_1", f"nginx@{B}")]) == []


# Whole runs, with the container tool faked


def test_update_restarts_a_service_whose_container_runs_another_digest_on_its_pin(stack):
    env_file = stack.service("web", f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.listing({"Name": "web_web_1", "ImageName": f"docker.io/library/nginx@{DIGEST_B}"})
    stack.full_update("web")

    assert stack.run(check_drift="true", service_snapshot="false", prune_images="false") == ExitCode.OK

    assert env_file.read_text() == f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={PIN_A}\n"
    assert [call[-1] for call in stack.calls()][-2:] == ["down", "-d"]
    [record] = stack.history()
    assert (record.outcome, record.old, record.new) == ("repaired", f"docker.io/library/nginx@{DIGEST_B}", PIN_A)


def test_a_compose_file_naming_a_tag_is_a_warning_and_no_restart(stack):
    stack.service("web", f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.listing({"Name": "web_web_1", "ImageName": "docker.io/library/nginx:latest"})

    assert stack.run(check_drift="true") == ExitCode.OK

    assert "compose service web in compose.yml does not use ${SERVICE_WEB_IMAGE_HASHED}" in stack.err.getvalue()
    assert [call[0] for call in stack.calls()] == ["skopeo", "podman", "podman"] and stack.history() == []


def test_check_reports_drift_with_a_status_and_exit_code_of_its_own(stack, capsys):
    stack.service("web", f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.listing({"Name": "web_web_1", "ImageName": f"docker.io/library/nginx@{DIGEST_B}"})
    settings = load_settings({**stack.env, "CIPUG_CHECK_DRIFT": "true"}, cwd=stack.tmp_path)
    assert run_check(settings, Log(1, stack.out, stack.err), json_output=True) == ExitCode.DRIFT

    [web] = json.loads(capsys.readouterr().out)
    assert web["status"] == "drift"
    assert web["drift"] == [{"container": "web_web_1", "compose_service": "web", "entry": "SERVICE_WEB_IMAGE_HASHED",
                             "running": f"docker.io/library/nginx@{DIGEST_B}", "pinned": PIN_A}]


def test_a_container_tool_that_cannot_list_is_a_warning_not_a_failure(stack):
    stack.service("web", f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)
    stack.fp.register(["podman", "ps", "-a", "-q", "--filter", "label=com.docker.compose.project.working_dir"],
                      returncode=125, stderr="cannot connect")

    assert stack.run(check_drift="true") == ExitCode.OK
    assert "cannot compare the running containers with the pins" in stack.err.getvalue()


def test_a_compose_service_whose_image_uses_no_pin_is_named_with_its_file_and_line(stack):
    stack.service("web", f"{TAGGED}SERVICE_WEB_IMAGE_HASHED={PIN_A}\n")
    compose = stack.root / "web" / "compose.yml"
    compose.write_text("services:\n  web:\n    image: ${SERVICE_WEB_IMAGE_HASHED}\n  db:\n    image: postgres:16\n"
                       f"  cache:\n    image: redis@{DIGEST_B}\n  app:\n    build: .\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)

    assert stack.run() == ExitCode.OK

    assert stack.err.getvalue() == (
        f"cipug: warning: {compose}:5: the `image:` of compose service db (postgres:16) uses none of "
        "${SERVICE_WEB_IMAGE_HASHED}, so cipug leaves it as it is\n")
