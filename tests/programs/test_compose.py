"""cipug.programs.compose: waiting for a restarted service, with podman health checks run where podman
cannot run them itself (no systemd), and the errors of its steps, with the compose tool and the
container tool faked by pytest-subprocess."""

from __future__ import annotations

import io
import json
import os
import shlex

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.log import Log
from cipug.programs.compose import ServiceControl, container_name, container_problems, recreates_changed
from cipug.programs.process import Runner
from cipug.services import select_services
from cipug.settings import load_settings

SECOND = 1_000_000_000  # inspect gives intervals in nanoseconds


def inspected(health: str, interval: int | None = None) -> str:
    config = {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": interval}} if interval else {}
    return json.dumps([{"Id": "id0", "Name": "web_app_1", "Config": config,
                        "State": {"Status": "running", "Health": {"Status": health}}}])


@pytest.fixture
def web(stack):
    stack.service("web", "SERVICE_WEB_IMAGE_TAGGED=nginx:latest\n")
    return stack


def control(stack, container_tool: str = "podman") -> tuple[ServiceControl, object]:
    settings = load_settings({**stack.env, "CIPUG_CONTAINER_TOOL": container_tool}, cwd=stack.tmp_path)
    log = Log(0, io.StringIO(), io.StringIO())
    [service] = select_services(settings, log, ["web"])
    return ServiceControl(settings, Runner(log), sleep=stack.time.sleep, clock=stack.time.clock), service


def containers_say(stack, *healths: str, interval: int | None = None, tool: str = "podman") -> None:
    """The service's one container, inspected once per health in turn."""
    label = f"label=com.docker.compose.project.working_dir={os.path.realpath(stack.root / 'web')}"
    stack.fp.register([tool, "ps", "-a", "-q", "--filter", label], stdout="id0\n", occurrences=len(healths))
    for health in healths:
        stack.fp.register([tool, "inspect", "id0"], stdout=inspected(health, interval))


def timeline(stack) -> list[str]:
    return [" ".join(call[1:3]) for call in stack.calls() if call[1] != "ps"]


def test_podman_runs_the_check_of_a_starting_container_at_its_interval(web):
    containers_say(web, "starting", "starting", "starting", "starting", "healthy", "healthy", interval=3 * SECOND)
    web.fp.register(["podman", "healthcheck", "run", "id0"])
    service_control, service = control(web)

    assert service_control.wait_until_up(service, 10) == []

    # Polled at 1000..1005; the check is due 3 s after the container was first seen starting.
    assert timeline(web) == ["inspect id0"] * 4 + ["healthcheck run"] + ["inspect id0"] * 2
    assert web.time.slept == [1] * 5


def test_an_interval_longer_than_the_wait_is_cut_so_the_answer_can_still_count(web):
    # No interval in inspect: podman's default, 30 s, far beyond a 5 s wait.
    containers_say(web, "starting", "starting", "starting", "starting", "healthy", "healthy")
    web.fp.register(["podman", "healthcheck", "run", "id0"])
    service_control, service = control(web)

    assert service_control.wait_until_up(service, 5) == []

    assert timeline(web) == ["inspect id0"] * 4 + ["healthcheck run"] + ["inspect id0"] * 2


def test_a_failing_check_leaves_the_container_unhealthy_and_is_not_repeated(web):
    containers_say(web, "starting", "starting", *["unhealthy"] * 4, interval=SECOND)
    web.fp.register(["podman", "healthcheck", "run", "id0"], returncode=1, stdout="unhealthy\n")
    service_control, service = control(web)

    assert service_control.wait_until_up(service, 5) == ["web_app_1 is unhealthy"]

    assert timeline(web).count("healthcheck run") == 1


def test_docker_runs_its_own_checks(web):
    containers_say(web, *["starting"] * 4, interval=SECOND, tool="docker")
    service_control, service = control(web, "docker")

    assert service_control.wait_until_up(service, 3) == ["web_app_1 is starting"]

    assert "healthcheck run" not in timeline(web)


def test_step_errors_leave_naming_the_service_to_the_transaction(web):
    # The transaction says "web: " before every step's error: "web: web: pull failed" said it twice.
    web.compose("web", "pull", returncode=1)
    service_control, service = control(web)

    with pytest.raises(CipugError) as raised:
        service_control.pull(service, [])

    assert raised.value.code == ExitCode.PULL_FAILED
    assert raised.value.message == "pull failed: `podman-compose -f compose.yml pull` exited 1: compose said no"


# What differs between the compose tools, each handled in cipug.programs.compose.

def control_with(stack, compose_tool: str, container_tool: str = "podman") -> tuple[ServiceControl, object]:
    settings = load_settings({**stack.env, "CIPUG_COMPOSE_TOOL": compose_tool, "CIPUG_CONTAINER_TOOL": container_tool},
                             cwd=stack.tmp_path)
    log = Log(0, io.StringIO(), io.StringIO())
    [service] = select_services(settings, log, ["web"])
    return ServiceControl(settings, Runner(log), sleep=stack.time.sleep, clock=stack.time.clock), service


def test_the_check_gets_first_pins_in_its_environment(web):
    # docker compose v2 refuses `image: ${SERVICE_WEB_IMAGE_HASHED}` while the variable is unset.
    pin = "docker.io/library/nginx@sha256:" + "a" * 64
    web.fp.register(["env", f"SERVICE_WEB_IMAGE_HASHED={pin}", "docker", "compose", "-f", "compose.yml", "ps"])
    web.fp.register(["docker", "compose", "-f", "compose.yml", "ps"])
    service_control, service = control_with(web, "docker compose", "docker")

    service_control.check(service, {"SERVICE_WEB_IMAGE_HASHED": pin})
    service_control.check(service, {})

    assert web.calls() == [["env", f"SERVICE_WEB_IMAGE_HASHED={pin}", "docker", "compose", "-f", "compose.yml", "ps"],
                           ["docker", "compose", "-f", "compose.yml", "ps"]]


@pytest.mark.parametrize("tool, recreates", [
    ("docker compose", True), ("/usr/bin/docker compose", True), ("docker-compose", True),
    ("/usr/local/bin/docker-compose", True), ("podman-compose", False), ("podman compose", False),
    ("docker", False), ("my-compose-wrapper", False),
])
def test_which_tools_recreate_what_changed_on_up(tool, recreates):
    assert recreates_changed(tuple(shlex.split(tool))) is recreates


def inspected_containers(*services: tuple[str, str]) -> str:
    """`inspect` of containers (id, compose service), named as podman-compose names them."""
    return json.dumps([{"Id": ident, "Name": f"web_{name}_1", "Config": {"Labels": {"com.docker.compose.service": name}},
                        "State": {"Status": "running"}} for ident, name in services])


def listing(stack, tool: str, *services: tuple[str, str]) -> None:
    label = f"label=com.docker.compose.project.working_dir={os.path.realpath(stack.root / 'web')}"
    stack.fp.register([tool, "ps", "-a", "-q", "--filter", label], stdout="".join(f"{i}\n" for i, _ in services))
    stack.fp.register([tool, "inspect", *(ident for ident, _ in services)], stdout=inspected_containers(*services))


def test_podman_compose_recreates_only_the_changed_services_by_removing_them_first(web):
    # podman-compose 1.0 leaves existing containers on `up -d`, and `down app` would take app's dependencies too.
    listing(web, "podman", ("id1", "app"), ("id2", "db"), ("id3", "cache"))
    web.fp.register(["podman", "rm", "--force", "id1", "id3"])
    web.fp.register(["podman-compose", "-f", "compose.yml", "up", "-d", "app", "cache"])
    service_control, service = control_with(web, "podman-compose")

    service_control.restart(service, ("app", "cache"))

    assert [call for call in web.calls() if call[1] not in ("ps", "inspect")] == [
        ["podman", "rm", "--force", "id1", "id3"], ["podman-compose", "-f", "compose.yml", "up", "-d", "app", "cache"]]


@pytest.mark.parametrize("tool", ["docker compose", "docker-compose"])
def test_docker_compose_recreates_what_changed_with_up(web, tool):
    web.fp.register([*tool.split(), "-f", "compose.yml", "up", "-d"])
    service_control, service = control_with(web, tool, "docker")

    service_control.restart(service, ("app",))

    assert web.calls() == [[*tool.split(), "-f", "compose.yml", "up", "-d"]]


def test_only_recreated_containers_are_waited_for_and_each_changed_service_needs_a_new_one(web):
    # id2 (db) was kept; app got the new id9, cache kept its old id3: it was not recreated.
    for _ in range(3):
        listing(web, "podman", ("id9", "app"), ("id2", "db"), ("id3", "cache"))
    service_control, service = control_with(web, "podman-compose")

    problems = service_control.wait_until_up(service, 2, kept={"id2", "id3"}, recreated=("app", "cache"))

    assert problems == ["cache has no new container"]


def test_container_names_are_shown_as_each_tool_gives_them():
    docker = {"Id": "a" * 64, "Name": "/web-app-1", "State": {"Status": "exited"}}
    podman = {"Id": "b" * 64, "Name": "web_app_1", "State": {"Status": "exited"}}
    assert [container_name(docker), container_name(podman)] == ["web-app-1", "web_app_1"]
    assert container_problems([docker, podman]) == ["web-app-1 is exited", "web_app_1 is exited"]
