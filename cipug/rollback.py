"""`cipug rollback`: put a service back to how it was before its last update.

Two ways. By default the whole folder (data, .env and compose file together) goes back to the
snapper snapshot taken before the update: stop, snapshot the state being replaced, `undochange`,
pull, start. With image_only only the pins the update replaced (from history) are written back,
applied like an update (Updater: snapshot, write .env, pull, restart, put back on failure).
Which update and which pins are decided by plain functions; `roll_back` asks `confirm` before
changing anything and records what it did in history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import errors, history
from .commands import require_tools
from .compose import ServiceControl
from .config import Config
from .errors import CipugError
from .imageref import Resolution, is_valid_digest
from .log import Log
from .services import Service
from .snapper import Snapper
from .apply import Updater, required_commands
from .update import Change, ImageEntry, ServicePlan, read_plan, select_services, short_digest, update_lock

# Asked with a yes/no question once the plan is shown; True goes ahead.
Confirm = Callable[[str], bool]


def last_update(records: Sequence[history.Record], service: str, snapshot: int | None = None) -> list[history.Record]:
    """The records of `service`'s last update that took effect, or of the one that took `snapshot`; [] if none."""
    updates = [record for record in records if record.service == service and record.outcome == history.UPDATED
               and (snapshot is None or record.snapshot == snapshot)]
    if not updates:
        return []
    last = updates[-1]
    # One update writes a record per changed image, all with the same time and snapshot.
    return [record for record in updates if (record.time, record.snapshot) == (last.time, last.snapshot)]


def previous_pins(update: Sequence[history.Record], entries: Sequence[ImageEntry]) -> list[Change]:
    """The changes that write back the pins `update` replaced, for the entries .env has now.

    All or nothing: an image the update pinned for the first time has no earlier pin, and removing
    its HASHED line would not bring back any particular image (compose files usually need the line),
    so that refuses, as does an entry that is gone from .env. Pins already in place need no change.
    """
    by_key = {entry.hashed_key: entry for entry in entries}
    changes = []
    for record in update:
        entry = by_key.get(record.entry)
        if entry is None:
            raise CipugError(f"{record.entry}, changed by the update at {record.time}, belongs to no *_IMAGE_TAGGED "
                             "entry in .env any more; roll back the whole folder instead (without --image-only)",
                             errors.USAGE)
        if record.old is None:
            raise CipugError(f"{record.entry} was pinned for the first time by the update at {record.time}: there "
                             "is no earlier pin to put back; roll back the whole folder instead (without --image-only)",
                             errors.USAGE)
        name, _, digest = record.old.rpartition("@")
        if not name or not is_valid_digest(digest):
            raise CipugError(f"history holds no valid earlier pin for {record.entry}: {record.old!r}", errors.USAGE)
        if entry.current != record.old:
            changes.append(Change(entry, Resolution(name, digest)))
    return changes


def folder_records(service: str, before: Sequence[ImageEntry], after: Sequence[ImageEntry], snapshot: int | None,
                   snapper_config: str, outcome: str, detail: str) -> list[history.Record]:
    """History records of a folder rollback: each image's pin before and after it."""
    time_text = history.now_iso()
    old = {entry.hashed_key: entry for entry in before}
    new = {entry.hashed_key: entry for entry in after}
    records = []
    for key in dict.fromkeys([*old, *new]):
        entry = new.get(key) or old[key]
        records.append(history.Record(time_text, service, key, entry.reference, old[key].current if key in old else None,
                                      new[key].current if key in new else None, snapshot, snapper_config, outcome,
                                      detail))
    # A folder without image entries is still worth a line: its data went back.
    return records or [history.Record(time_text, service, "", "", None, None, snapshot, snapper_config, outcome,
                                      detail)]


def roll_back(config: Config, log: Log, name: str, *, confirm: Confirm, snapshot: int | None = None,
              image_only: bool = False) -> int:
    """Roll the service `name` back (see the module doc); the exit code."""
    # A folder rollback always snapshots, stops and starts, whatever the update's settings say;
    # it waits for the service whenever HEALTH_TIMEOUT allows, AUTO_ROLLBACK or not.
    settings = config if image_only else config.replace(service_snapshot=True, service_stop_start=True,
                                                        auto_rollback=True)
    require_tools(required_commands(settings))
    # Held from reading history to the end, so a timer run cannot change the service in between.
    with update_lock(config):
        # Filters only choose what the update run touches: a rollback works on any service folder.
        [service] = select_services(config.replace(services_filter=(), services_filter_exclude=()), log, [name])
        records = history.read(config.history_file, log)
        update = last_update(records, name, snapshot)
        if image_only:
            return _roll_back_images(settings, log, service, update, snapshot, confirm)
        return _roll_back_folder(settings, log, service, update, snapshot, confirm)


def _pin_lines(log: Log, pins: list[tuple[str, str, str | None, str | None]]) -> None:
    for key, tagged, now, then in pins:
        log.info(f"  {key} ({tagged}): {short_digest(now)} -> {short_digest(then)}")


def _hold_hint(log: Log, name: str) -> None:
    log.warning(f"{name}: the next update run moves it forward again while its tags point to the newer images; "
                "to keep it back, add it to SERVICES_FILTER_EXCLUDE")


def _cancelled(log: Log) -> int:
    log.info("cancelled: nothing was changed")
    return errors.OK


def _roll_back_images(config: Config, log: Log, service: Service, update: list[history.Record],
                      number: int | None, confirm: Confirm) -> int:
    if not update:
        which = f"that took snapshot {number}" if number is not None else "to roll back"
        raise CipugError(f"{service.name}: history ({config.history_file}) has no update {which}", errors.USAGE)
    plan = read_plan(service)
    if plan.error is not None:
        raise plan.error
    plan.changes = previous_pins(update, plan.entries)
    when = update[0].time
    if not plan.changes:
        log.info(f"{service.name}: .env already pins the images from before the update at {when}; nothing to do")
        return errors.OK
    log.info(f"{service.name}: put back the images from before the update at {when}; data stays as it is")
    _pin_lines(log, [(change.entry.hashed_key, change.entry.reference, change.entry.current, change.new)
                     for change in plan.changes])
    steps = ["snapshot the folder"] if config.service_snapshot else []
    steps.append("write .env")
    steps += ["pull"] if config.service_pull else []
    if config.service_stop_start:
        wait = config.auto_rollback and config.health_timeout > 0
        steps.append(f"restart (back to the current images if not up within {config.health_timeout} s)" if wait
                     else "restart")
    log.info("  steps: " + ", ".join(steps))
    if not confirm(f"Roll back the images of {service.name}?"):
        return _cancelled(log)
    return _apply_pins(config, log, plan, f"image only: pins from before the update at {when}")


def _apply_pins(config: Config, log: Log, plan: ServicePlan, detail: str) -> int:
    updater = Updater(config, log, ServiceControl(config), Snapper(config.snapper_tool), outcome=history.ROLLED_BACK)
    code = errors.INTERRUPTED
    try:
        code = updater.apply(plan)
    finally:
        # The Updater records its own way of undoing a failed change as "rolled back" too; here any
        # failure means the rollback did not happen.
        records = [record._replace(detail=detail) if code == errors.OK
                   else record._replace(outcome=history.FAILED, detail=f"{detail}: {record.detail}")
                   for record in updater.records]
        history.append(config.history_file, records, log)
    if code == errors.OK:
        _hold_hint(log, plan.service.name)
    return code


def _roll_back_folder(config: Config, log: Log, service: Service, update: list[history.Record],
                      number: int | None, confirm: Confirm) -> int:
    snapper = Snapper(config.snapper_tool)
    snapper_config = snapper.config_for(service.folder)
    if number is None:
        if not update:
            raise CipugError(f"{service.name}: history ({config.history_file}) has no update to roll back; name a "
                             f"snapshot with --snapshot N (see `snapper -c {snapper_config} list`)", errors.USAGE)
        number = update[0].snapshot
        if number is None:
            raise CipugError(f"{service.name}: the update at {update[0].time} took no snapshot (SERVICE_SNAPSHOT was "
                             "off); use --image-only, or name a snapshot with --snapshot N", errors.USAGE)
    if update and update[0].snapper_config not in (None, snapper_config):
        raise CipugError(f"{service.name}: snapshot {number} was taken with snapper config {update[0].snapper_config}, "
                         f"but {service.folder} now has config {snapper_config}; name one of its snapshots with "
                         "--snapshot N", errors.USAGE)
    # Read leniently: a broken .env is one more reason to roll back, not a reason to refuse.
    before = read_plan(service).entries
    taken = f", taken before the update at {update[0].time}" if update else ""
    log.info(f"{service.name}: roll back {service.folder} to snapper snapshot {number} (config {snapper_config}){taken}")
    now = {entry.hashed_key: entry.current for entry in before}
    _pin_lines(log, [(record.entry, record.tagged, now.get(record.entry), record.old) for record in update])
    wait = f" and wait up to {config.health_timeout} s until it is up" if config.health_timeout > 0 else ""
    log.info(f"  steps: stop it, snapshot its current state, `snapper -c {snapper_config} undochange {number}..0` "
             f"(data, .env and compose file as in snapshot {number}; what was written since is kept only in the new "
             f"snapshot), {'pull, ' if config.service_pull else ''}start it{wait}")
    if not confirm(f"Roll back {service.name} to snapshot {number}?"):
        return _cancelled(log)
    return _restore_folder(config, log, service, snapper, snapper_config, number, before)


def _restore_folder(config: Config, log: Log, service: Service, snapper: Snapper, snapper_config: str,
                    number: int, before: list[ImageEntry]) -> int:
    control = ServiceControl(config)
    detail = f"folder restored to snapshot {number}"
    after = before
    safety: int | None = None
    stage = "running"
    try:
        control.stop(service)
        stage = "stopped"
        safety = snapper.create(snapper_config, f"cipug rollback {service.name}: before undochange {number}..0")
        snapper.undo_change(snapper_config, number)
        stage = "restored"
        after = read_plan(service).entries
        _start(config, log, control, service, [entry.current for entry in after if entry.current])
    except CipugError as error:
        if stage == "restored":
            log.error(f"{service.name}: {detail}, but {error.message}")
            outcome, detail = history.ROLLED_BACK, f"{detail}; {error.message}"
        else:
            log.error(f"{service.name}: {error.message}; " + _after_failure(control, service, stage, snapper_config,
                                                                           safety))
            outcome, detail = history.FAILED, error.message
        history.append(config.history_file, folder_records(service.name, before, after, safety, snapper_config,
                                                           outcome, detail), log)
        if isinstance(error, errors.Interrupted):
            raise
        return error.code
    history.append(config.history_file, folder_records(service.name, before, after, safety, snapper_config,
                                                       history.ROLLED_BACK, detail), log)
    log.success(f"{service.name}: rolled back to snapshot {number} and started; the state before the rollback is "
                f"snapshot {safety}")
    _hold_hint(log, service.name)
    return errors.OK


def _after_failure(control: ServiceControl, service: Service, stage: str, snapper_config: str,
                   safety: int | None) -> str:
    """Start a service stopped for a restore that did not happen; what the user needs to know."""
    if stage == "running":
        return "nothing was changed"
    # undochange checks the snapshot before it touches a file, so the folder is almost surely as it was.
    hint = (f"; should the folder be partly restored, `snapper -c {snapper_config} undochange {safety}..0` puts back "
            "the state before" if safety is not None else "")
    try:
        control.restart(service)
    except CipugError as error:
        return f"it could NOT be started again: {error.message}{hint}"
    return f"it was started again{hint}"


def _start(config: Config, log: Log, control: ServiceControl, service: Service, pins: list[str]) -> None:
    if config.service_pull:
        try:
            control.pull(service, pins)
        except CipugError as error:
            # The images may still be here (pruning is not certain); starting will tell.
            log.warning(f"{error.message}; starting with the images at hand")
    control.restart(service)
    if config.health_timeout > 0:
        problems = control.wait_until_up(service, config.health_timeout)
        if problems:
            raise CipugError(f"not up within {config.health_timeout} s after the start: " + "; ".join(problems),
                             errors.RESTART_FAILED)
