"""Controlling a service through the compose tool, systemd and the container tool."""

from __future__ import annotations

import json
import os
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


def container_problems(containers: list[dict[str, Any]]) -> list[str]:
    """Why containers from `inspect` are not up: not running, or not healthy where checked."""
    if not containers:
        return ["no containers found"]
    problems = []
    for container in containers:
        name = str(container.get("Name") or container.get("Id", "?")[:12]).lstrip("/")
        state = container.get("State") or {}
        status = state.get("Status", "unknown")
        health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status") or ""
        if status != "running":
            problems.append(f"{name} is {status}")
        elif health and health != "healthy":
            problems.append(f"{name} is {health}")
    return problems


def systemd_unit(compose: tuple[str, ...], service: str) -> str:
    """`podman-compose@web.service` for COMPOSE_TOOL=podman-compose, `docker-compose@web.service` for `docker compose`."""
    tool = "-".join([os.path.basename(compose[0]), *compose[1:]])
    return f"{tool}@{service}.service"


class ServiceControl:
    """Checks, pulls, stops, starts and watches a service with the configured tools."""

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
                           f"{service.name}: the compose tool does not work here", cwd=service.folder)

    def pull(self, service: Service, references: list[str]) -> None:
        """Pull, then make sure every new image is really there: podman-compose 1.0 exits 0
        even when its `podman pull` failed."""
        self.runner.output(self.compose(service, "pull"), ExitCode.PULL_FAILED, f"{service.name}: pull failed",
                           cwd=service.folder)
        missing = [reference for reference in references
                   if self.runner.run([*self.settings.container_tool, "image", "inspect", reference]).returncode != 0]
        if missing:
            raise CipugError(f"{service.name}: pull failed: {', '.join(missing)} not present after "
                             f"`{describe(self.compose(service, 'pull'))}`", ExitCode.PULL_FAILED)

    def restart(self, service: Service) -> None:
        if self.settings.stop_start_method == "compose":
            self.stop(service)
            self.start(service)
        else:
            self.runner.output(self._systemctl("restart", service), ExitCode.RESTART_FAILED,
                               f"{service.name}: restart failed")

    def stop(self, service: Service) -> None:
        argv = (self.compose(service, "down") if self.settings.stop_start_method == "compose"
                else self._systemctl("stop", service))
        self.runner.output(argv, ExitCode.RESTART_FAILED, f"{service.name}: stopping failed", cwd=service.folder)

    def start(self, service: Service) -> None:
        argv = (self.compose(service, "up", "-d") if self.settings.stop_start_method == "compose"
                else self._systemctl("start", service))
        self.runner.output(argv, ExitCode.RESTART_FAILED, f"{service.name}: starting failed", cwd=service.folder)

    def _systemctl(self, verb: str, service: Service) -> list[str]:
        user = ["--user"] if self.settings.stop_start_method == "systemd-user" else []
        return ["systemctl", *user, verb, systemd_unit(self.settings.compose_tool, service.name)]

    def containers(self, service: Service) -> list[dict[str, Any]]:
        tool = list(self.settings.container_tool)
        label = f"label={WORKING_DIR_LABEL}={service.folder.resolve()}"
        ids = self.runner.output([*tool, "ps", "-a", "-q", "--filter", label], ExitCode.RESTART_FAILED,
                                  f"{service.name}: listing containers failed").split()
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
        apart, so one that exits at once is caught; the problems left at the timeout, else []."""
        deadline = self.clock() + timeout
        good_polls = 0
        while True:
            problems = container_problems(self.containers(service))
            good_polls = 0 if problems else good_polls + 1
            if good_polls == 2:
                return []
            if self.clock() >= deadline:
                return problems or ["not up long enough to be trusted"]
            self.sleep(1)

    def prune_images(self) -> str | None:
        """Prune unused images; a failure is only worth a warning, so it is returned, not raised."""
        try:
            self.runner.output([*self.settings.container_tool, "image", "prune", "-f"], ExitCode.OK,
                               "image prune failed")
        except CipugError as error:
            return error.message
        return None
