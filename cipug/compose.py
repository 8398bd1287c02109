"""Controlling a service through the compose tool, systemd and the container tool."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from . import errors
from .commands import describe, run, run_checked
from .config import Config
from .errors import CipugError
from .services import Service

# Both docker compose and podman-compose label containers with the project folder, which
# finds a service's containers without re-deriving each tool's project-name rules.
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


def container_problems(containers: list[dict]) -> list[str]:
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
    def __init__(self, config: Config) -> None:
        self.config = config

    def compose(self, service: Service, *arguments: str) -> list[str]:
        argv = [*self.config.compose_tool, "-f", os.path.basename(service.compose_file)]
        env_file = os.path.basename(service.env_file)
        if env_file != ".env":
            argv += ["--env-file", env_file]
        return argv + list(arguments)

    def check(self, service: Service) -> None:
        run_checked(self.compose(service, "ps"), errors.COMPOSE_UNUSABLE,
                    f"{service.name}: the compose tool does not work here", cwd=service.folder)

    def pull(self, service: Service, references: list[str]) -> None:
        """Pull, then make sure every new image is really there: podman-compose 1.0 exits 0
        even when its `podman pull` failed."""
        run_checked(self.compose(service, "pull"), errors.PULL_FAILED, f"{service.name}: pull failed",
                    cwd=service.folder)
        missing = [reference for reference in references
                   if run([*self.config.container_tool, "image", "inspect", reference]).returncode != 0]
        if missing:
            raise CipugError(f"{service.name}: pull failed: {', '.join(missing)} not present after "
                             f"`{describe(self.compose(service, 'pull'))}`", errors.PULL_FAILED)

    def restart(self, service: Service) -> None:
        method = self.config.stop_start_method
        if method == "compose":
            run_checked(self.compose(service, "down"), errors.RESTART_FAILED, f"{service.name}: stopping failed",
                        cwd=service.folder)
            run_checked(self.compose(service, "up", "-d"), errors.RESTART_FAILED,
                        f"{service.name}: starting failed", cwd=service.folder)
        else:
            user = ["--user"] if method == "systemd-user" else []
            run_checked(["systemctl", *user, "restart", systemd_unit(self.config.compose_tool, service.name)],
                        errors.RESTART_FAILED, f"{service.name}: restart failed")

    def stop(self, service: Service) -> None:
        method = self.config.stop_start_method
        if method == "compose":
            argv = self.compose(service, "down")
        else:
            user = ["--user"] if method == "systemd-user" else []
            argv = ["systemctl", *user, "stop", systemd_unit(self.config.compose_tool, service.name)]
        run_checked(argv, errors.RESTART_FAILED, f"{service.name}: stopping failed", cwd=service.folder)

    def containers(self, service: Service) -> list[dict]:
        tool = list(self.config.container_tool)
        label = f"label={WORKING_DIR_LABEL}={os.path.realpath(service.folder)}"
        ids = run_checked([*tool, "ps", "-a", "-q", "--filter", label], errors.RESTART_FAILED,
                          f"{service.name}: listing containers failed").split()
        if not ids:
            return []
        result = run([*tool, "inspect", *ids])
        try:
            return json.loads(result.stdout) if result.returncode == 0 else []
        except ValueError:
            return []

    def wait_until_up(self, service: Service, timeout: float, *, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> list[str]:
        """Poll until every container runs (and is healthy where checked) twice in a row, a second
        apart, so one that exits at once is caught; the problems left at the timeout, else []."""
        deadline = clock() + timeout
        good_polls = 0
        while True:
            problems = container_problems(self.containers(service))
            good_polls = 0 if problems else good_polls + 1
            if good_polls == 2:
                return []
            if clock() >= deadline:
                return problems or ["not up long enough to be trusted"]
            sleep(1)

    def prune_images(self) -> str | None:
        """Prune unused images; a failure is only worth a warning, so it is returned, not raised."""
        try:
            run_checked([*self.config.container_tool, "image", "prune", "-f"], errors.OK, "image prune failed")
        except CipugError as error:
            return error.message
        return None
