"""`cipug rollback`: put a service back to how it was before its last update.

Two ways. By default the whole folder (data, .env and compose file together) goes back to the
snapper snapshot taken before the update (a folder transaction). With image_only only the pins the
update replaced (from history) are written back, applied as an update is. Which update and which
pins are decided by plain functions; `roll_back` shows the transaction's steps, asks `confirm`
before changing anything, and records what it did in history.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

from ..errors import CipugError, ExitCode
from ..files import history
from ..files import state as state_file
from ..files.lock import run_lock
from ..holds import held, hold_text, now_iso, state_path
from ..log import Log
from ..lookup.references import Resolution, is_valid_digest
from ..plan import Change, ImageEntry, ServicePlan, read_plan
from ..programs.compose import ServiceControl
from ..programs.containers import image_versions
from ..programs.process import Runner
from ..programs.snapper import Snapper
from ..programs.tools import change_tools, require_tools
from ..report import short_digest, versions_text
from ..services import Service, select_services
from ..settings import Settings
from ..transaction import Applier, Kind, Transaction, apply_all, folder_transaction, update_transaction

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
                             ExitCode.ROLLBACK_REFUSED)
        if record.old is None:
            raise CipugError(f"{record.entry} was pinned for the first time by the update at {record.time}: there "
                             "is no earlier pin to put back; roll back the whole folder instead (without --image-only)",
                             ExitCode.ROLLBACK_REFUSED)
        name, _, digest = record.old.rpartition("@")
        if not name or not is_valid_digest(digest):
            raise CipugError(f"history holds no valid earlier pin for {record.entry}: {record.old!r}",
                             ExitCode.ROLLBACK_REFUSED)
        if entry.current != record.old:
            changes.append(Change(entry, Resolution(name, digest)))
    return changes


def roll_back(settings: Settings, log: Log, name: str, *, confirm: Confirm, snapshot: int | None = None,
              image_only: bool = False, hold: bool = True, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> ExitCode:
    """Roll the service `name` back (see the module doc); the exit code.

    `hold`: afterwards hold the service, naming the digests rolled back from, so update runs leave it alone.
    """
    # A folder rollback always snapshots, stops and starts, whatever the update's settings say;
    # it waits for the service whenever HEALTH_TIMEOUT allows, AUTO_ROLLBACK or not.
    if not image_only:
        settings = dataclasses.replace(settings, service_snapshot=True, service_stop_start=True, auto_rollback=True)
    require_tools(change_tools(settings))
    runner = Runner(log)
    snapper = Snapper(settings.snapper_tool, runner)
    # Held from reading history to the end, so a timer run cannot change the service in between.
    with run_lock(settings):
        # Filters only choose what the update run touches: a rollback works on any service folder.
        unfiltered = dataclasses.replace(settings, services_filter=(), services_filter_exclude=())
        [service] = select_services(unfiltered, log, [name])
        records = history.read(settings.history_file, log)
        update = last_update(records, name, snapshot)
        preview = _Preview(settings, log, runner, history.known_versions(records))
        if image_only:
            transaction = _image_transaction(settings, preview, service, update, snapshot)
        else:
            transaction = _folder_transaction(settings, preview, service, update, snapshot, snapper)
        if transaction is None:
            if hold:
                return _hold(settings, log, service, {record.entry: record.new for record in update if record.new})
            return ExitCode.OK
        log.info(f"  steps: {transaction.describe()}")
        if hold:
            log.info(f"  then hold {name}, so update runs leave it alone until `cipug release {name}` (--no-hold "
                     "skips this)")
        question = (f"Roll back the images of {name}?" if image_only
                    else f"Roll back {name} to snapshot {transaction.restored_snapshot}?")
        if not confirm(question):
            log.info("cancelled: nothing was changed")
            return ExitCode.OK
        applier = Applier(settings, log, ServiceControl(settings, runner, sleep=sleep, clock=clock), snapper)
        [code] = apply_all(settings, log, applier, [transaction])
        # Held whenever .env went back, even if the service did not come up afterwards.
        back = {record.entry: record.old for record in applier.records
                if record.outcome == history.ROLLED_BACK and record.entry and record.old}
        if hold and any(record.outcome == history.ROLLED_BACK for record in applier.records):
            held_code = _hold(settings, log, service, back)
            return code if code != ExitCode.OK else held_code
    if code == ExitCode.OK:
        log.warning(f"{name}: not held (--no-hold): the next update run moves it forward again while its tags point "
                    f"to the newer images; `cipug hold {name}` keeps it back")
    return code


def _hold(settings: Settings, log: Log, service: Service, rolled_back_from: dict[str, str]) -> ExitCode:
    """Hold the service after a rollback (the run lock held), naming the pins it was rolled back from."""
    path = state_path(settings)
    new_hold = state_file.Hold(now_iso(), "cipug rollback", dict(rolled_back_from))
    try:
        state_file.save(path, held(state_file.load(path, log), state_file.service_key(service.folder), service.name,
                                   new_hold))
    except CipugError as error:
        log.error(f"{service.name}: {error.message}; it is NOT held: the next update run may move it forward again")
        return error.code
    log.info(f"{service.name}: {hold_text(new_hold)}; update runs check it but change nothing until "
             f"`cipug release {service.name}`")
    return ExitCode.OK


class _Preview:
    """What a rollback shows before it asks: the pins it puts back, with their versions where known."""

    def __init__(self, settings: Settings, log: Log, runner: Runner, versions: dict[str, str]) -> None:
        self.settings, self.log, self.runner, self.versions = settings, log, runner, versions

    def pin_lines(self, pins: list[tuple[str, str, str | None, str | None]]) -> None:
        """One line per (key, tagged, pinned now, pinned after); versions history does not know are read
        from the local images (the old ones are kept, KEEP_IMAGES)."""
        unknown = [pin for _, _, now, then in pins for pin in (now, then) if pin and pin not in self.versions]
        if unknown:
            try:
                self.versions.update(image_versions(self.settings, self.runner, unknown))
            except CipugError as error:
                self.log.verbose(f"the versions of the images are not known: {error.message}")
        for key, tagged, now, then in pins:
            between = versions_text(now, then, self.versions)
            self.log.info(f"  {key} ({tagged}): {short_digest(now)} -> {short_digest(then)}"
                          + (f" ({between})" if between else ""))


def _image_transaction(settings: Settings, preview: _Preview, service: Service, update: list[history.Record],
                       number: int | None) -> Transaction | None:
    log = preview.log
    if not update:
        which = f"that took snapshot {number}" if number is not None else "to roll back"
        raise CipugError(f"{service.name}: history ({settings.history_file}) has no update {which}",
                         ExitCode.ROLLBACK_REFUSED)
    plan = read_plan(service)
    if plan.error is not None:
        raise plan.error
    plan.changes = previous_pins(update, plan.entries)
    when = update[0].time
    if not plan.changes:
        log.info(f"{service.name}: .env already pins the images from before the update at {when}; nothing to do")
        return None
    log.info(f"{service.name}: put back the images from before the update at {when}; data stays as it is")
    preview.pin_lines([(change.entry.hashed_key, change.entry.reference, change.entry.current, change.new)
                       for change in plan.changes])
    return update_transaction(settings, plan, Kind.IMAGE_ROLLBACK, f"image only: pins from before the update at {when}")


def _folder_transaction(settings: Settings, preview: _Preview, service: Service, update: list[history.Record],
                        number: int | None, snapper: Snapper) -> Transaction:
    log = preview.log
    snapper_config = snapper.config_for(service.folder)
    if number is None:
        if not update:
            raise CipugError(f"{service.name}: history ({settings.history_file}) has no update to roll back; name a "
                             f"snapshot with --snapshot N (see `snapper -c {snapper_config} list`)",
                             ExitCode.ROLLBACK_REFUSED)
        number = update[0].snapshot
        if number is None:
            raise CipugError(f"{service.name}: the update at {update[0].time} took no snapshot (SERVICE_SNAPSHOT was "
                             "off); use --image-only, or name a snapshot with --snapshot N", ExitCode.ROLLBACK_REFUSED)
    if update and update[0].snapper_config not in (None, snapper_config):
        raise CipugError(f"{service.name}: snapshot {number} was taken with snapper config {update[0].snapper_config}, "
                         f"but {service.folder} now has config {snapper_config}; name one of its snapshots with "
                         "--snapshot N", ExitCode.ROLLBACK_REFUSED)
    # The rollback stops the service before it restores anything: what would make the restore
    # fail is checked first, so a rollback that cannot be done costs no downtime.
    if number not in snapper.snapshot_numbers(snapper_config):
        raise CipugError(f"{service.name}: snapper config {snapper_config} has no snapshot {number} (see `snapper -c "
                         f"{snapper_config} list`); nothing was changed", ExitCode.ROLLBACK_REFUSED)
    if not os.access(service.folder, os.W_OK):
        # Also for root: a read-only btrfs subvolume or file system refuses writes to everyone.
        raise CipugError(f"{service.name}: {service.folder} cannot be written, so it cannot be restored; nothing was "
                         "changed", ExitCode.ROLLBACK_REFUSED)
    # Read leniently: a broken .env is one more reason to roll back, not a reason to refuse.
    plan: ServicePlan = read_plan(service)
    taken = f", taken before the update at {update[0].time}" if update else ""
    log.info(f"{service.name}: roll back {service.folder} to snapper snapshot {number} (config {snapper_config}){taken}")
    now = {entry.hashed_key: entry.current for entry in plan.entries}
    preview.pin_lines([(record.entry, record.tagged, now.get(record.entry), record.old) for record in update])
    return folder_transaction(settings, plan, snapper_config, number)
