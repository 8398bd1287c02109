"""Controlling a service through the compose tool, systemd and the container tool."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ..errors import CipugError, ExitCode
from ..services import Service
from ..settings import Settings
from .containers import WORKING_DIR_LABEL
from ..pruning import KEEP_TAG_PREFIX, keep_tag, keep_tag_suffix
from .process import Runner, describe, last_line

# The compose service a container belongs to: set by docker compose v2, docker-compose v1 and
# podman-compose alike, while container names differ (v2 `proj-web-1`, the others `proj_web_1`).
SERVICE_LABEL = "com.docker.compose.service"


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


def compose_service(container: dict[str, Any]) -> str:
    """The compose service of a container from `inspect` ("" for one no compose tool made)."""
    labels = (container.get("Config") or {}).get("Labels") or {}
    return str(labels.get(SERVICE_LABEL) or "")


def container_name(container: dict[str, Any]) -> str:
    """The container's name as the tools show it: docker's inspect has a leading `/`, podman's not."""
    return str(container.get("Name") or str(container.get("Id", "?"))[:12]).lstrip("/")


def recreates_changed(compose: tuple[str, ...]) -> bool:
    """Whether `<compose> up -d` recreates exactly the containers whose configuration changed.

    docker compose (v2, also as the standalone `docker-compose` binary) and docker-compose v1 keep a
    hash of each container's configuration and recreate those whose hash moved. podman-compose 1.0
    keeps none: its `up -d` leaves an existing container as it is (its `podman run` fails on the taken
    name and it starts the old one), and `down SERVICE` also stops the services SERVICE depends on.
    Any other tool is treated like podman-compose: its way (remove, then `up -d SERVICE`) works with all.
    """
    program = os.path.basename(compose[0])
    return program == "docker-compose" or (program == "docker" and compose[1:2] == ("compose",))


def container_problems(containers: list[dict[str, Any]]) -> list[str]:
    """Why containers from `inspect` are not up: not running, or not healthy where checked."""
    if not containers:
        return ["no containers found"]
    problems = []
    for container in containers:
        name = container_name(container)
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

    def check(self, service: Service, unwritten: Mapping[str, str] | None = None) -> None:
        """`<compose> ps` in the folder. `unwritten` are pins about to be written for the first time:
        docker compose v2 refuses a file whose `image: ${…_HASHED}` is empty ("service has neither an
        image nor a build context"), so the check gets them in its environment (`env NAME=value`), as
        compose reads them after the write. Values .env already holds are checked as they are."""
        assignments = [f"{name}={value}" for name, value in sorted((unwritten or {}).items())]
        argv = ["env", *assignments, *self.compose(service, "ps")] if assignments else self.compose(service, "ps")
        self.runner.output(argv, ExitCode.COMPOSE_UNUSABLE, "the compose tool does not work here",
                           cwd=service.folder)

    def pull(self, service: Service, references: list[str]) -> None:
        """Pull, then make sure every new image is really there: podman-compose 1.0 exits 0
        even when its `podman pull` failed."""
        self.runner.output(self.compose(service, "pull"), ExitCode.PULL_FAILED, "pull failed", cwd=service.folder)
        missing = [reference for reference in references
                   if self.runner.run([*self.settings.container_tool, "image", "inspect", reference]).returncode != 0]
        if missing:
            raise CipugError(f"pull failed: {', '.join(missing)} not present after "
                             f"`{describe(self.compose(service, 'pull'))}`", ExitCode.PULL_FAILED)

    def restart(self, service: Service, only: Sequence[str] = ()) -> None:
        """Restart the whole service, or with `only` recreate just those compose services (and what the
        compose tool recreates with them)."""
        if only:
            self.recreate(service, only)
        elif self.settings.stop_start_method == "compose":
            self.stop(service)
            self.start(service)
        else:
            self.runner.output(self._systemctl("restart", service), ExitCode.RESTART_FAILED,
                               "restart failed")

    def recreate(self, service: Service, only: Sequence[str]) -> None:
        """Recreate the containers of the compose services `only` on the images the files name now."""
        if recreates_changed(self.settings.compose_tool):
            # It recreates what changed, and what it must recreate with it; others keep running.
            self.start(service)
            return
        self.remove(service, only)
        self.runner.output(self.compose(service, "up", "-d", *only), ExitCode.RESTART_FAILED, "starting failed",
                           cwd=service.folder)

    def remove(self, service: Service, only: Sequence[str]) -> None:
        """Stop and remove the containers of the compose services `only`, with the container tool: the same
        for every compose tool, and podman-compose's `down SERVICE` would take SERVICE's dependencies too."""
        ids = [str(container.get("Id")) for container in self.containers(service)
               if compose_service(container) in only]
        if ids:
            self.runner.output([*self.settings.container_tool, "rm", "--force", *ids], ExitCode.RESTART_FAILED,
                               "stopping failed")

    def stop(self, service: Service, only: Sequence[str] = ()) -> None:
        if only:
            self.remove(service, only)
            return
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

    def wait_until_up(self, service: Service, timeout: float, kept: Collection[str] = (),
                      recreated: Sequence[str] = ()) -> list[str]:
        """Poll until every container runs (and is healthy where checked) twice in a row, a second
        apart, so one that exits at once is caught; the problems left at the timeout, else [].
        With podman, the health checks that are due are run in between.

        After recreating only the compose services `recreated`, `kept` holds the ids of the containers
        there were before: those still there were left alone and are not waited for, and each of
        `recreated` must have a new container.
        """
        deadline = self.clock() + timeout
        good_polls = 0
        checks_due: dict[str, float] = {}
        while True:
            containers = [container for container in self.containers(service) if str(container.get("Id")) not in kept]
            problems = container_problems(containers) if containers or not recreated else []
            new = {compose_service(container) for container in containers}
            problems += [f"{name} has no new container" for name in recreated if name not in new]
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

    def prune_images(self, keep: Collection[str]) -> list[str]:
        """Prune unused images but those of the pinned references `keep` (cipug.pruning); failures are only
        worth warnings, so they are returned, not raised."""
        tool = self.settings.container_tool
        listed = self.runner.run([*tool, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        # By suffix: docker lists Docker Hub's repositories in short form (`nginx`).
        tagged = {name.rpartition(":")[2]: name for name in listed.stdout.split()
                  if name.rpartition(":")[2].startswith(KEEP_TAG_PREFIX)}
        wanted = {keep_tag_suffix(pinned): pinned for pinned in keep}
        commands = [[*tool, "tag", pinned, keep_tag(pinned)] for suffix, pinned in sorted(wanted.items())
                    if suffix not in tagged]
        # Only the tag goes when the image has others; else the image, unless a container uses it.
        commands += [[*tool, "rmi", name] for suffix, name in sorted(tagged.items()) if suffix not in wanted]
        warnings = []
        for argv in commands:
            result = self.runner.run(argv)
            # A pin whose image is not here (pruned by someone, never pulled) has nothing to keep.
            if result.returncode != 0 and argv[len(tool)] == "rmi":
                warnings.append(f"`{describe(argv)}` exited {result.returncode}: {last_line(result.stderr)}")
        try:
            self.runner.output([*tool, "image", "prune", "-f"], ExitCode.OK, "image prune failed")
        except CipugError as error:
            warnings.append(error.message)
        return warnings
