"""Applying planned changes to services, in the order that keeps each one whole.

Per changed service: check the compose tool, snapshot, write .env, pull, restart, wait until up.
A failure after .env was written puts the old .env back (and, with AUTO_ROLLBACK, the old
containers), so a service ends fully on its old images or fully on its new ones.
"""

from __future__ import annotations

from . import errors, history
from .atomicfile import read_text, write_atomic
from .commands import require_tools
from .compose import ServiceControl
from .config import Config
from .errors import CipugError, Interrupted
from .log import Log
from .snapper import Snapper
from .update import ServicePlan, short_digest, snapshot_description


def required_commands(config: Config) -> list[tuple[str, ...]]:
    """The programs updating a service with these settings calls (skopeo: see make_resolver)."""
    commands = []
    if config.service_pull or config.service_stop_start:
        commands.append(config.compose_tool)
    if config.service_stop_start and config.stop_start_method != "compose":
        commands.append(("systemctl",))
    if config.service_snapshot:
        commands.append(config.snapper_tool)
    if config.prune_images or config.service_pull or (
            config.service_stop_start and config.auto_rollback and config.health_timeout > 0):
        commands.append(config.container_tool)
    return commands


class Updater:
    """Applies one service's changes in the safe order, collecting history records."""

    def __init__(self, config: Config, log: Log, control: ServiceControl, snapper: Snapper,
                 outcome: str = history.UPDATED) -> None:
        self.config, self.log, self.control, self.snapper = config, log, control, snapper
        # What a change that took effect is called: `cipug rollback --image-only` applies older pins.
        self.outcome = outcome
        self.records: list[history.Record] = []

    def apply(self, plan: ServicePlan) -> int:
        """Update one service; its exit code. Interrupted is re-raised after the service was put back."""
        service, config, log = plan.service, self.config, self.log
        snapshot: int | None = None
        snapper_config: str | None = None
        stage = "before"
        try:
            if config.service_pull or config.service_stop_start:
                self.control.check(service)
            if config.service_snapshot:
                snapper_config = self.snapper.config_for(service.folder)
                snapshot = self.snapper.create(snapper_config, snapshot_description(service.name, plan.changes))
                log.verbose(f"{service.name}: snapper snapshot {snapshot} (config {snapper_config})")
            self._write_env(plan)
            stage = "written"
            if config.service_pull:
                self.control.pull(service, [change.new for change in plan.changes])
                log.verbose(f"{service.name}: pulled")
            if config.service_stop_start:
                stage = "restarting"
                self._restart(plan)
        except CipugError as error:
            if stage == "before":
                log.error(f"{service.name}: {error.message}; nothing was changed")
                outcome = history.FAILED
            else:
                outcome = self._roll_back(plan, error, stage == "restarting", snapshot, snapper_config)
            self._record(plan, snapshot, snapper_config, outcome, error.message)
            if isinstance(error, Interrupted):
                raise
            return error.code
        log.success(f"{service.name}: {self.outcome}" + (" and restarted" if config.service_stop_start else ""))
        self._record(plan, snapshot, snapper_config, self.outcome)
        return errors.OK

    def _write_env(self, plan: ServicePlan) -> None:
        service = plan.service
        try:
            if read_text(service.env_file) != plan.text:
                raise CipugError(f"{service.env_file} changed while cipug was running; it is left as it is",
                                 errors.ENV_WRITE_FAILED)
            values = {change.entry.hashed_key: change.new for change in plan.changes}
            after = {change.entry.hashed_key: change.entry.tagged_key for change in plan.changes}
            new_text = plan.env.updated(values, after)
        except OSError as error:
            raise CipugError(f"{service.env_file} cannot be read: {error.strerror}", errors.ENV_WRITE_FAILED) from None
        except ValueError as error:
            raise CipugError(f"{service.env_file}: {error}", errors.ENV_WRITE_FAILED) from None
        write_atomic(service.env_file, new_text)
        for change in plan.changes:
            self.log.info(f"{service.name}: {change.entry.hashed_key} {change.resolution.name} "
                          f"{short_digest(change.entry.current)} -> {short_digest(change.new)}")

    def _restart(self, plan: ServicePlan) -> None:
        self.control.restart(plan.service)
        if self.config.auto_rollback and self.config.health_timeout > 0:
            problems = self.control.wait_until_up(plan.service, self.config.health_timeout)
            if problems:
                raise CipugError(f"not up within {self.config.health_timeout} s after the restart: "
                                 + "; ".join(problems), errors.RESTART_FAILED)

    def _roll_back(self, plan: ServicePlan, error: CipugError, restarting: bool, snapshot: int | None,
                   snapper_config: str | None) -> str:
        """Put the old .env back, and after a restart also the old containers; the history outcome."""
        service, log = plan.service, self.log
        try:
            write_atomic(service.env_file, plan.text)
        except CipugError as restore_error:
            log.error(f"{service.name}: {error.message}; the old .env could NOT be put back: {restore_error.message}")
            return history.FAILED
        # The new images may already have changed the data; only a person can judge whether to undo that.
        data_hint = (f"; the data was left as it is, to restore it too: `cipug rollback {service.name} "
                     f"--snapshot {snapshot}` or `snapper -c {snapper_config} undochange {snapshot}..0`"
                     if snapshot is not None else "")
        if not restarting:
            log.error(f"{service.name}: {error.message}; the old .env was put back")
            return history.FAILED
        if not self.config.auto_rollback:
            log.error(f"{service.name}: {error.message}; the old .env was put back, the service was not "
                      f"restarted (AUTO_ROLLBACK is off){data_hint}")
            return history.FAILED
        try:
            self.control.restart(service)
        except CipugError as restart_error:
            log.error(f"{service.name}: {error.message}; the old .env was put back but restarting on the old "
                      f"images failed too: {restart_error.message}{data_hint}")
            return history.FAILED
        log.error(f"{service.name}: {error.message}; rolled back to the old images{data_hint}")
        return history.ROLLED_BACK

    def _record(self, plan: ServicePlan, snapshot: int | None, snapper_config: str | None, outcome: str,
                detail: str = "") -> None:
        time_text = history.now_iso()
        self.records += [
            history.Record(time_text, plan.service.name, change.entry.hashed_key, change.entry.reference,
                           change.entry.current, change.new, snapshot, snapper_config, outcome, detail)
            for change in plan.changes
        ]


def apply_all(config: Config, log: Log, plans: list[ServicePlan]) -> list[int]:
    """Update every planned service; their exit codes. The tools are checked before any is touched."""
    require_tools(required_commands(config))
    updater = Updater(config, log, ServiceControl(config), Snapper(config.snapper_tool))
    codes = []
    try:
        for plan in plans:
            codes.append(updater.apply(plan))
    finally:
        history.append(config.history_file, updater.records, log)
    if config.prune_images and any(record.outcome != history.FAILED for record in updater.records):
        warning = updater.control.prune_images()
        if warning:
            log.warning(warning)
    return codes
