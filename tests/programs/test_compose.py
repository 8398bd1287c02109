"""cipug.programs.compose: waiting for a restarted service, with podman health checks run where podman
cannot run them itself (no systemd), and the errors of its steps, with the compose tool and the
container tool faked by pytest-subprocess."""

from __future__ import annotations

import io
import json
import os

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.log import Log
from cipug.programs.compose import ServiceControl
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
