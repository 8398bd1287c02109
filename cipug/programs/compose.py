"""Controlling a service through the compose tool, systemd and the container tool."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from ..errors import CipugError, ExitCode
from ..services import Service
from ..settings import Settings
from .process import Runner, describe

# Both docker compose and podman-compose label containers with the project folder, which
# finds a service's containers without re-deriving each tool's project-name rules.
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


# Seconds between polls while waiting for a service.
POLL_SECONDS = 1
# podman's HEALTHCHECK interval where the image and compose file set none.
PODMAN_CHECK_INTERVAL = 30.0


def status(container: dict[str, Any]) -> str:
    return str((container.get("State") or {}).get("Status", "unknown"))


def health(container: dict[str, Any]) -> str:
    """The container's health (`starting`, `healthy`, `unhealthy`), "" without a health check."""
    state = container.get("State") or {}
    return str((state.get("Health") or state.get("Healthcheck") or {}).get("Status") or "")


def check_interval(container: dict[str, Any]) -> float:
    """Seconds between the container's health checks (inspect's Config.Healthcheck.Interval, in nanoseconds)."""
    interval = ((container.get("Config") or {}).get("Healthcheck") or {}).get("Interval")
    return interval / 1e9 if isinstance(interval, int) and interval > 0 else PODMAN_CHECK_INTERVAL


def container_problems(containers: list[dict[str, Any]]) -> list[str]:
    """Why containers from `inspect` are not up: not running, or not healthy where checked."""
    if not containers:
        return ["no containers found"]
    problems = []
    for container in containers:
        name = str(container.get("Name") or container.get("Id", "?")[:12]).lstrip("/")
        if status(container) != "running":
            problems.append(f"{name} is {status(container)}")
        elif health(container) not in ("", "healthy"):
            problems.append(f"{name} is {health(container)}")
    return problems


def systemd_unit(compose: tuple[str, ...], service: str) -> str:
    """`podman-compose@web.service` for COMPOSE_TOOL=podman-compose, `docker-compose@web.service` for `docker compose`."""
    tool = "-".join([os.path.basename(compose[0]), *compose[1:]])
    return f"{tool}@{service}.service"


class ServiceControl:
    """Checks, pulls, stops, starts and watches a service with the configured tools. Errors do not
    name the service: the transaction whose step failed does."""

    def __init__(self, settings: Settings, runner: Runner, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.runner = runner
        self.sleep = sleep
        self.clock = clock

    def compose(self, service: Service, *arguments: str) -> list[str]:
        argv = [*self.settings.compose_tool, "-f", service.compose_file.name]
        if service.env_file.name != ".env":
            argv += ["--env-file", service.env_file.name]
        return argv + list(arguments)

    def check(self, service: Service) -> None:
        self.runner.output(self.compose(service, "ps"), ExitCode.COMPOSE_UNUSABLE,
                           "the compose tool does not work here", cwd=service.folder)

    def pull(self, service: Service, references: list[str]) -> None:
        """Pull, then make sure every new image is really there: podman-compose 1.0 exits 0
        even when its `podman pull` failed."""
        self.runner.output(self.compose(service, "pull"), ExitCode.PULL_FAILED, "pull failed", cwd=service.folder)
        missing = [reference for reference in references
                   if self.runner.run([*self.settings.container_tool, "image", "inspect", reference]).returncode != 0]
        if missing:
            raise CipugError(f"pull failed: {', '.join(missing)} not present after "
                             f"`{describe(self.compose(service, 'pull'))}`", ExitCode.PULL_FAILED)

    def restart(self, service: Service) -> None:
        if self.settings.stop_start_method == "compose":
            self.stop(service)
            self.start(service)
        else:
            self.runner.output(self._systemctl("restart", service), ExitCode.RESTART_FAILED,
                               "restart failed")

    def stop(self, service: Service) -> None:
        argv = (self.compose(service, "down") if self.settings.stop_start_method == "compose"
                else self._systemctl("stop", service))
        self.runner.output(argv, ExitCode.RESTART_FAILED, "stopping failed", cwd=service.folder)

    def start(self, service: Service) -> None:
        argv = (self.compose(service, "up", "-d") if self.settings.stop_start_method == "compose"
                else self._systemctl("start", service))
        self.runner.output(argv, ExitCode.RESTART_FAILED, "starting failed", cwd=service.folder)

    def _systemctl(self, verb: str, service: Service) -> list[str]:
        user = ["--user"] if self.settings.stop_start_method == "systemd-user" else []
        return ["systemctl", *user, verb, systemd_unit(self.settings.compose_tool, service.name)]

    def containers(self, service: Service) -> list[dict[str, Any]]:
        tool = list(self.settings.container_tool)
        label = f"label={WORKING_DIR_LABEL}={service.folder.resolve()}"
        ids = self.runner.output([*tool, "ps", "-a", "-q", "--filter", label], ExitCode.RESTART_FAILED,
                                  "listing containers failed").split()
        if not ids:
            return []
        result = self.runner.run([*tool, "inspect", *ids])
        try:
            containers = json.loads(result.stdout) if result.returncode == 0 else []
        except ValueError:
            return []
        return containers if isinstance(containers, list) else []

    def wait_until_up(self, service: Service, timeout: float) -> list[str]:
        """Poll until every container runs (and is healthy where checked) twice in a row, a second
        apart, so one that exits at once is caught; the problems left at the timeout, else [].
        With podman, the health checks that are due are run in between."""
        deadline = self.clock() + timeout
        good_polls = 0
        checks_due: dict[str, float] = {}
        while True:
            containers = self.containers(service)
            problems = container_problems(containers)
            good_polls = 0 if problems else good_polls + 1
            if good_polls == 2:
                return []
            if self.clock() >= deadline:
                return problems or ["not up long enough to be trusted"]
            self._run_health_checks(containers, checks_due, deadline)
            self.sleep(POLL_SECONDS)

    def _run_health_checks(self, containers: list[dict[str, Any]], due: dict[str, float], deadline: float) -> None:
        """Run the health checks of podman containers still `starting` whose interval is up (`due`: container
        id -> when). podman runs them from systemd timers; without systemd they never run, and every
        container with a check stays `starting`. Docker runs its own."""
        if os.path.basename(self.settings.container_tool[0]) != "podman":
            return
        for container in containers:
            if status(container) != "running" or health(container) != "starting":
                continue
            now = self.clock()
            # An interval longer than the time left is cut short: the check's answer still needs two polls.
            wait = min(check_interval(container), max(deadline - now - 2 * POLL_SECONDS, 0))
            identifier = str(container.get("Id"))
            if now >= due.setdefault(identifier, now + wait):
                try:
                    self.runner.run([*self.settings.container_tool, "healthcheck", "run", identifier],
                                    timeout=max(deadline - now, POLL_SECONDS))
                except subprocess.TimeoutExpired:
                    pass  # still `starting`: the wait's own deadline ends it
                due[identifier] = now + wait

    def prune_images(self) -> str | None:
        """Prune unused images; a failure is only worth a warning, so it is returned, not raised."""
        try:
            self.runner.output([*self.settings.container_tool, "image", "prune", "-f"], ExitCode.OK,
                               "image prune failed")
        except CipugError as error:
            return error.message
        return None
