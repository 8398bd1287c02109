"""One service transaction: the steps that change a service, as data, run in the order that keeps it whole.

An update, an image-only rollback and a folder rollback are each a list of steps (check the
compose tool, snapshot, write .env, pull, note the versions, stop, restore the folder, restart or
start, wait until up). Previews print the steps a transaction will run; `Applier` runs them. When a step fails,
what the finished steps changed is put back, so a service ends fully as it was or fully changed:
written pins are put back, and containers that were touched are started again on them (for an
update only with AUTO_ROLLBACK). A folder that `snapper undochange` restored is not put back:
that was the point, and what went wrong after it is said and recorded. Every transaction ends
with history records of what really happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from .composefile import Unsure, services_to_recreate
from .drift import Drift
from .envfile import EnvFile, Previous
from .errors import CipugError, ExitCode, Interrupted
from .files import history, intents
from .files.atomic import read_text, write_atomic
from .files.intents import Intent, PinIntent
from .log import Log
from .lookup.references import Resolution
from .plan import Change, ImageEntry, ServicePlan, read_plan
from .programs.compose import ServiceControl
from .programs.containers import image_versions
from .programs.process import Runner
from .programs.snapper import Snapper
from .programs.tools import change_tools, require_tools
from .report import short_digest
from .services import Service
from .settings import Settings


class Kind(Enum):
    """What a transaction does."""

    UPDATE = "update"
    IMAGE_ROLLBACK = "image-only rollback"
    FOLDER_ROLLBACK = "folder rollback"
    # Undoing what an interrupted update or image-only rollback left: the change it was did not happen.
    REPAIR = "repair"
    # Bringing a service whose containers run other images than its pins to its pins.
    DRIFT = "drift"

    @property
    def outcome(self) -> str:
        """History's outcome when it succeeds."""
        return {Kind.UPDATE: history.UPDATED, Kind.REPAIR: history.FAILED,
                Kind.DRIFT: history.REPAIRED}.get(self, history.ROLLED_BACK)


@dataclass(frozen=True)
class CheckCompose:
    def describe(self) -> str:
        return "check that the compose tool works here"


@dataclass(frozen=True)
class TakeSnapshot:
    description: str
    what: str = "snapshot the folder"

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class WritePins:
    def describe(self) -> str:
        return "write .env"


@dataclass(frozen=True)
class RevertPins:
    """Put back the pins an interrupted run wrote, where .env still holds them."""

    pins: tuple[PinIntent, ...]

    def describe(self) -> str:
        return "put back the pins an interrupted run wrote"


@dataclass(frozen=True)
class Pull:
    # A folder rollback starts with the images at hand when pulling fails: they may still be there.
    required: bool = True

    def describe(self) -> str:
        return "pull"


@dataclass(frozen=True)
class NoteVersions:
    """Read the versions of the pulled images: said, noted at the end of the pins' lines in .env and
    in the snapshot's description. Only informs: what fails here is a warning."""

    def describe(self) -> str:
        return "note the versions"


@dataclass(frozen=True)
class Stop:
    def describe(self) -> str:
        return "stop it"


@dataclass(frozen=True)
class RestoreFolder:
    snapper_config: str
    snapshot: int

    def describe(self) -> str:
        return (f"`snapper -c {self.snapper_config} undochange {self.snapshot}..0` (data, .env and compose file as "
                f"in snapshot {self.snapshot}; what was written since is kept only in the new snapshot)")


@dataclass(frozen=True)
class Restart:
    """Restart the whole service, or (RESTART=changed) recreate only the compose services `only`.

    `whole_because` says why a RESTART=changed restart is of the whole service after all.
    """

    only: tuple[str, ...] = ()
    whole_because: str = ""

    def describe(self) -> str:
        if self.only:
            return f"recreate {', '.join(self.only)} (the compose services whose image changed)"
        return f"restart (all of it: {self.whole_because})" if self.whole_because else "restart"


@dataclass(frozen=True)
class Start:
    def describe(self) -> str:
        return "start it"


@dataclass(frozen=True)
class WaitUntilUp:
    timeout: int

    def describe(self) -> str:
        return f"wait up to {self.timeout} s until it is up"


Step = (CheckCompose | TakeSnapshot | WritePins | RevertPins | Pull | NoteVersions | Stop | RestoreFolder | Restart
        | Start | WaitUntilUp)
# Steps after which the service's containers may no longer be what they were.
_TOUCHING_CONTAINERS = (Stop, Restart, Start, WaitUntilUp)


@dataclass(frozen=True)
class Transaction:
    """The steps for one service. `plan` is the service as read before; `changes` the pins to write."""

    kind: Kind
    plan: ServicePlan
    steps: tuple[Step, ...]
    changes: tuple[Change, ...] = ()
    # History's detail when it succeeds, and the start of it when it fails.
    detail: str = ""

    @property
    def service(self) -> Service:
        return self.plan.service

    @property
    def restored_snapshot(self) -> int | None:
        """The snapshot a folder transaction brings the folder back to."""
        return next((step.snapshot for step in self.steps if isinstance(step, RestoreFolder)), None)

    def describe(self) -> str:
        return ", ".join(step.describe() for step in self.steps)


def update_transaction(settings: Settings, plan: ServicePlan, kind: Kind = Kind.UPDATE,
                       detail: str = "") -> Transaction:
    """Pin `plan.changes`: check, snapshot, write, pull, restart and wait, as the settings say."""
    steps: list[Step] = []
    if settings.service_pull or settings.service_stop_start:
        steps.append(CheckCompose())
    if settings.service_snapshot:
        steps.append(TakeSnapshot(snapshot_description(plan.service.name, plan.changes)))
    steps.append(WritePins())
    if settings.service_pull:
        # The images a rollback goes back to are kept (KEEP_IMAGES): it works with the registry down.
        steps += [Pull(required=kind is not Kind.IMAGE_ROLLBACK), NoteVersions()]
    if settings.service_stop_start:
        steps.append(restart_step(settings, plan.service, plan.changes))
        if settings.auto_rollback and settings.health_timeout > 0:
            steps.append(WaitUntilUp(settings.health_timeout))
    return Transaction(kind, plan, tuple(steps), tuple(plan.changes), detail)


def restart_step(settings: Settings, service: Service, changes: Sequence[Change]) -> Restart:
    """The restart RESTART asks for: with `changed`, of the compose services whose image uses a changed
    pin, read from the compose file; of the whole service where that file cannot be read with certainty."""
    if settings.restart != "changed":
        return Restart()
    if settings.stop_start_method != "compose":
        return Restart(whole_because=f"STOP_START_METHOD={settings.stop_start_method} restarts whole units")
    try:
        only = services_to_recreate(service.compose_file, {change.entry.hashed_key for change in changes})
    except Unsure as error:
        return Restart(whole_because=f"{service.compose_file.name}: {error}")
    return Restart(only)


def drift_transaction(settings: Settings, plan: ServicePlan, drift: list[Drift]) -> Transaction:
    """Restart a service whose containers run other images than `.env` pins on its pins; .env is not written."""
    steps: list[Step] = [CheckCompose()]
    if settings.service_snapshot:
        steps.append(TakeSnapshot(f"cipug {plan.service.name}: before restarting on its pins (drift)"))
    if settings.service_pull:
        steps.append(Pull())
    steps.append(Restart())
    if settings.auto_rollback and settings.health_timeout > 0:
        steps.append(WaitUntilUp(settings.health_timeout))
    changes = {found.entry.hashed_key: Change(found.entry._replace(current=found.running),
                                              Resolution(*(found.entry.current or "").rsplit("@", 1)))
               for found in drift}
    return Transaction(Kind.DRIFT, plan, tuple(steps), tuple(changes.values()),
                       "; ".join(found.describe(plan.service.compose_file.name) for found in drift))


def folder_transaction(settings: Settings, plan: ServicePlan, snapper_config: str, snapshot: int) -> Transaction:
    """Bring the whole folder back to `snapshot`: stop, snapshot what is replaced, restore, pull, start, wait."""
    name = plan.service.name
    steps: list[Step] = [
        Stop(),
        TakeSnapshot(f"cipug rollback {name}: before undochange {snapshot}..0", "snapshot its current state"),
        RestoreFolder(snapper_config, snapshot),
    ]
    if settings.service_pull:
        steps.append(Pull(required=False))
    steps.append(Start())
    if settings.health_timeout > 0:
        steps.append(WaitUntilUp(settings.health_timeout))
    return Transaction(Kind.FOLDER_ROLLBACK, plan, tuple(steps))


def intent_of(transaction: Transaction) -> Intent:
    """The intent record of a transaction about to start."""
    env = transaction.plan.env
    pins = tuple(PinIntent(change.entry.hashed_key, change.entry.reference, change.entry.current, change.new,
                           env.previous(change.entry.hashed_key) if env else Previous(False, False, ""))
                 for change in transaction.changes)
    return Intent(transaction.service.name, str(transaction.service.folder), transaction.kind.value,
                  history.now_iso(), pins, None, None, transaction.restored_snapshot, intents.PINS)


def repair_transaction(settings: Settings, service: Service, intent: Intent) -> Transaction:
    """Make whole a service an interrupted run left part-way, from its intent record.

    An update or image-only rollback is undone: its pins came from a lookup of a run that is over,
    and this run's own lookups decide anew. A folder rollback is finished: the person asked for it.
    """
    plan = read_plan(service)
    if intent.kind == Kind.FOLDER_ROLLBACK.value:
        if intent.stage == intents.RESTORE and intent.restore is not None and intent.snapper_config:
            steps: list[Step] = [RestoreFolder(intent.snapper_config, intent.restore), Start()]
            if settings.health_timeout > 0:
                steps.append(WaitUntilUp(settings.health_timeout))
            return Transaction(Kind.FOLDER_ROLLBACK, plan, tuple(steps),
                               detail=f"finishing a rollback interrupted at {intent.started}")
        # Stopped (or not even that) before its restore began: the rollback did not happen.
        stopped = intent.stage == intents.CONTAINERS
        return Transaction(Kind.REPAIR, plan, (Start(),) if stopped else (),
                           detail=f"a rollback interrupted at {intent.started} did not happen"
                                  + ("; the next run started the service again" if stopped else ""))
    steps = [RevertPins(intent.pins)]
    if intent.stage != intents.PINS:
        steps.append(Restart())
    changes = tuple(Change(ImageEntry(pin.entry.removesuffix("HASHED") + "TAGGED", pin.entry, pin.tagged, pin.old),
                           Resolution(*pin.new.rsplit("@", 1))) for pin in intent.pins)
    return Transaction(Kind.REPAIR, plan, tuple(steps), changes,
                       f"interrupted at {intent.started} ({intent.kind}, stage {intent.stage}); the next run put back "
                       "the earlier pins" + (" and restarted the service" if intent.stage != intents.PINS else ""))


def snapshot_description(service: str, changes: Sequence[Change], versions: Mapping[str, str] | None = None) -> str:
    """`cipug web: nginx:latest -> docker.io/library/nginx@sha256:0123456789ab`, and `(1.27.1 -> 1.27.2)` once
    the versions are known."""
    images = []
    for change in changes:
        image = f"{change.entry.reference} -> {change.resolution.name}@{change.resolution.digest[:19]}"
        if versions and change.new in versions:
            image += f" ({versions.get(change.entry.current or '', 'none')} -> {versions[change.new]})"
        images.append(image)
    return f"cipug {service}: {', '.join(images)}"


def note_text(version: str) -> str:
    """The note cipug puts after a pin in .env: `version 29.0.4`, or `built 2026-11-30 12:00:00`."""
    text = " ".join(version.split())[:_NOTE_MAX]
    return text if text.startswith("built ") else f"version {text}"


# A version label is free text; a line in .env stays readable.
_NOTE_MAX = 80


@dataclass
class _Progress:
    """What a running transaction has done so far."""

    done: list[Step] = field(default_factory=list)
    # The step running, or the one that failed.
    current: Step | None = None
    snapshot: int | None = None
    snapper_config: str | None = None
    # The entries as .env has them after a folder restore.
    restored: list[ImageEntry] | None = None
    # The ids of the containers there were before a restart of only some compose services.
    kept: frozenset[str] = frozenset()
    # Pinned reference → image version, read once the images are local.
    versions: dict[str, str] = field(default_factory=dict)

    def did(self, *kinds: type) -> bool:
        return any(isinstance(step, kinds) for step in self.done)

    def touched_containers(self) -> bool:
        """Whether a step that stops or starts containers ran, even if only half-way."""
        return self.did(*_TOUCHING_CONTAINERS) or isinstance(self.current, _TOUCHING_CONTAINERS)


class Applier:
    """Runs transactions one after the other, collecting their history records."""

    def __init__(self, settings: Settings, log: Log, control: ServiceControl, snapper: Snapper) -> None:
        self.settings, self.log, self.control, self.snapper = settings, log, control, snapper
        self.records: list[history.Record] = []

    def run(self, transaction: Transaction, intent: Intent | None = None) -> ExitCode:
        """Run one transaction; its exit code. Interrupted is re-raised after the service was put back.

        An intent record is kept while it runs (`intent` is the one a repair works from), so a run
        killed part-way is repaired by the next one; it is removed when the service is whole again.
        """
        progress = _Progress()
        path = intents.intent_path(self.settings.history_file.parent, transaction.service.folder)
        record = intent or intent_of(transaction)
        if intent is None:
            intents.save(path, record)
        try:
            for step in transaction.steps:
                progress.current = step
                if record.stage == intents.PINS and isinstance(step, (*_TOUCHING_CONTAINERS, RestoreFolder)):
                    stage = intents.RESTORE if isinstance(step, RestoreFolder) else intents.CONTAINERS
                    record = replace(record, stage=stage, snapshot=progress.snapshot,
                                     snapper_config=progress.snapper_config)
                    intents.save(path, record)
                self._do(step, transaction, progress)
                progress.done.append(step)
        except CipugError as error:
            outcome, detail = self._put_back(transaction, progress, error)
            # Its new images did not start or come up: later runs skip those digests (cipug.holds).
            did_not_come_up = (transaction.kind is Kind.UPDATE and not isinstance(error, Interrupted)
                               and isinstance(progress.current, (Restart, WaitUntilUp)))
            self._record(transaction, progress, outcome, detail, did_not_come_up)
            # A repair that did not succeed is tried again by the next run.
            if intent is None:
                intents.remove(path, self.log)
            if isinstance(error, Interrupted):
                raise
            return error.code
        intents.remove(path, self.log)
        self._record(transaction, progress, transaction.kind.outcome, self._restored_detail(transaction, progress))
        self.log.success(self._success_line(transaction, progress))
        return ExitCode.OK

    def _do(self, step: Step, transaction: Transaction, progress: _Progress) -> None:
        service, log = transaction.service, self.log
        match step:
            case CheckCompose():
                # Pins written for the first time are not in .env yet, and docker compose v2 refuses the file without them.
                self.control.check(service, {change.entry.hashed_key: change.new for change in transaction.changes
                                             if change.entry.current is None})
            case TakeSnapshot(description=description):
                progress.snapper_config = self.snapper.config_for(service.folder)
                progress.snapshot = self.snapper.create(progress.snapper_config, description)
                log.verbose(f"{service.name}: snapper snapshot {progress.snapshot} (config {progress.snapper_config})")
            case WritePins():
                self._write_pins(transaction)
            case RevertPins(pins=pins):
                self._revert_pins(service, pins)
            case Pull(required=required):
                try:
                    self.control.pull(service, self._pins(transaction, progress))
                except CipugError as error:
                    if required:
                        raise
                    log.warning(f"{service.name}: {error.message}; starting with the images at hand")
                else:
                    log.verbose(f"{service.name}: pulled")
            case NoteVersions():
                self._note_versions(transaction, progress)
            case Stop():
                self.control.stop(service)
            case RestoreFolder(snapper_config=snapper_config, snapshot=snapshot):
                self.snapper.undo_change(snapper_config, snapshot)
                progress.restored = read_plan(service).entries
            case Restart(only=only, whole_because=whole_because):
                if whole_because:
                    log.warning(f"{service.name}: RESTART=changed, but restarting all of it: {whole_because}")
                if only:
                    progress.kept = frozenset(str(container.get("Id")) for container in self.control.containers(service))
                self.control.restart(service, only)
            case Start():
                self.control.start(service)
            case WaitUntilUp(timeout=timeout):
                problems = self.control.wait_until_up(service, timeout, progress.kept, self._only(transaction))
                if problems:
                    raise CipugError(f"not up within {timeout} s: " + "; ".join(problems), ExitCode.RESTART_FAILED)

    def _note_versions(self, transaction: Transaction, progress: _Progress) -> None:
        """Read the versions of the old and new images, now both are local; say what changes, and note the
        new versions in .env and the snapshot's description."""
        name = transaction.service.name
        pins = [pin for change in transaction.changes for pin in (change.entry.current, change.new) if pin]
        progress.versions = versions = image_versions(self.settings, self.control.runner, pins)
        for change in transaction.changes:
            if change.new in versions:
                self.log.info(f"{name}: {change.entry.hashed_key} {versions.get(change.entry.current or '', '(none)')} "
                              f"→ {versions[change.new]} ({short_digest(change.entry.current)} → "
                              f"{short_digest(change.new)})")
        if not any(change.new in versions for change in transaction.changes):
            return
        try:
            self._write_notes(transaction, versions)
            if progress.snapshot is not None and progress.snapper_config is not None:
                self.snapper.describe(progress.snapper_config, progress.snapshot,
                                      snapshot_description(name, transaction.changes, versions))
        except Interrupted:
            raise
        except CipugError as error:
            self.log.warning(f"{name}: the versions are not noted everywhere: {error.message}")

    def _write_notes(self, transaction: Transaction, versions: Mapping[str, str]) -> None:
        """Note the new versions after the pins in .env, on the lines that still hold what cipug wrote."""
        path = transaction.service.env_file
        try:
            env = EnvFile.parse(read_text(path), path)
            notes = {change.entry.hashed_key: note_text(versions[change.new]) for change in transaction.changes
                     if change.new in versions and env.previous(change.entry.hashed_key).text == change.new}
            text = env.updated({}, {}, notes)
        except OSError as error:
            raise CipugError(f"{path} cannot be read: {error.strerror}", ExitCode.ENV_WRITE_FAILED) from None
        except ValueError as error:
            raise CipugError(f"{path}: {error}", ExitCode.ENV_WRITE_FAILED) from None
        if text != env.text:
            write_atomic(path, text)

    @staticmethod
    def _only(transaction: Transaction) -> tuple[str, ...]:
        """The compose services a RESTART=changed restart of the transaction recreates (empty: all of it)."""
        return next((step.only for step in transaction.steps if isinstance(step, Restart)), ())

    def _pins(self, transaction: Transaction, progress: _Progress) -> list[str]:
        """The pinned references the service runs on once the transaction is done."""
        if progress.restored is not None:
            return [entry.current for entry in progress.restored if entry.current]
        return [change.new for change in transaction.changes]

    def _write_pins(self, transaction: Transaction) -> None:
        plan, service = transaction.plan, transaction.service
        try:
            if read_text(service.env_file) != plan.text:
                raise CipugError(f"{service.env_file} changed while cipug was running; it is left as it is",
                                 ExitCode.ENV_WRITE_FAILED)
            assert plan.env is not None, "a plan without a parsed .env has nothing to write"
            values = {change.entry.hashed_key: change.new for change in transaction.changes}
            after = {change.entry.hashed_key: change.entry.tagged_key for change in transaction.changes}
            # A note names the version of the pin it follows: it goes with the old pin, and NoteVersions
            # writes the new one's.
            new_text = plan.env.updated(values, after, {key: "" for key in values})
        except OSError as error:
            raise CipugError(f"{service.env_file} cannot be read: {error.strerror}",
                             ExitCode.ENV_WRITE_FAILED) from None
        except ValueError as error:
            raise CipugError(f"{service.env_file}: {error}", ExitCode.ENV_WRITE_FAILED) from None
        write_atomic(service.env_file, new_text)
        for change in transaction.changes:
            self.log.info(f"{service.name}: {change.entry.hashed_key} {change.resolution.name} "
                          f"{short_digest(change.entry.current)} -> {short_digest(change.new)}")

    def _revert_pins(self, service: Service, pins: tuple[PinIntent, ...]) -> None:
        try:
            env = EnvFile.parse(read_text(service.env_file), service.env_file)
        except OSError as error:
            raise CipugError(f"{service.env_file} cannot be read: {error.strerror}",
                             ExitCode.ENV_WRITE_FAILED) from None
        # A pin the interrupted run had not written yet needs nothing.
        written = {pin.entry: pin.new for pin in pins if not env.previous(pin.entry).same_pin(pin.previous)}
        text, edited_since = env.reverted(written, {pin.entry: pin.previous for pin in pins})
        if edited_since:
            raise CipugError(f"{service.env_file}: {', '.join(edited_since)} changed since the interrupted run wrote "
                             "it; .env and the containers are left as they are", ExitCode.ENV_WRITE_FAILED)
        if text != env.text:
            write_atomic(service.env_file, text)

    def _put_back(self, transaction: Transaction, progress: _Progress, error: CipugError) -> tuple[str, str]:
        """Undo what the finished steps changed, say what state the service is in; history's outcome and detail."""
        name = transaction.service.name
        if progress.did(RestoreFolder):
            # The folder is as the user asked; only what came after went wrong.
            detail = f"{self._restored_detail(transaction, progress)}; {error.message}"
            self.log.error(f"{name}: {self._restored_detail(transaction, progress)}, but {error.message}")
            return history.ROLLED_BACK, detail
        state, outcome = self._undo(transaction, progress, interrupted=isinstance(error, Interrupted))
        self.log.error(f"{name}: {error.message}; {state}")
        return outcome, f"{transaction.detail}: {error.message}" if transaction.detail else error.message

    def _undo(self, transaction: Transaction, progress: _Progress, *, interrupted: bool) -> tuple[str, str]:
        """Put back pins and containers; what state that leaves the service in, and history's outcome."""
        service, settings = transaction.service, self.settings
        touched = progress.touched_containers()
        if not progress.did(WritePins):
            if not touched:
                return "nothing was changed", history.FAILED
            return self._start_again(service, progress), history.FAILED
        try:
            edited_since = self._put_back_pins(transaction)
        except CipugError as restore_error:
            return f"the old pins could NOT be put back: {restore_error.message}", history.FAILED
        if edited_since:
            return (f"{service.env_file} no longer holds what cipug wrote for {', '.join(edited_since)} (edited "
                    "since): .env and the containers are left as they are"), history.FAILED
        hint = self._data_hint(service, progress)
        if not touched:
            return "the old pins were put back in .env", history.FAILED
        if not settings.auto_rollback:
            return (f"the old pins were put back in .env, the service was not restarted (AUTO_ROLLBACK is off)"
                    f"{hint}"), history.FAILED
        first = [change.entry.hashed_key for change in transaction.changes if change.entry.current is None]
        if first:
            # Without an earlier pin there are no old images to start it on.
            stopped = ", ".join(self._only(transaction)) or "the service"
            try:
                self.control.stop(service, self._only(transaction))
            except CipugError as stop_error:
                return (f"{', '.join(first)} had no earlier pin to go back to, and stopping {stopped} failed: "
                        f"{stop_error.message}"), history.FAILED
            return f"{', '.join(first)} had no earlier pin to go back to: {stopped} was stopped", history.FAILED
        try:
            self.control.restart(service, self._only(transaction))
        except CipugError as restart_error:
            return (f"the old pins were put back in .env but restarting on the old images failed too: "
                    f"{restart_error.message}{hint}"), history.FAILED
        # An update put back is rolled back; a rollback put back did not happen.
        # An update whose new images did not come up was rolled back (and its digest is remembered as
        # failed); one that was stopped part-way failed for no fault of the images; a rollback put back
        # did not happen.
        outcome = history.ROLLED_BACK if transaction.kind is Kind.UPDATE and not interrupted else history.FAILED
        return f"rolled back to the old images{hint}", outcome

    def _put_back_pins(self, transaction: Transaction) -> list[str]:
        """Write back the pins the transaction replaced, where .env still holds what it wrote; the keys
        edited since, which are left alone with everything else."""
        service, plan = transaction.service, transaction.plan
        assert plan.env is not None, "pins were written, so .env was parsed"
        try:
            current = EnvFile.parse(read_text(service.env_file), service.env_file)
        except OSError as error:
            raise CipugError(f"{service.env_file} cannot be read: {error.strerror}",
                             ExitCode.ENV_WRITE_FAILED) from None
        written = {change.entry.hashed_key: change.new for change in transaction.changes}
        text, edited_since = current.reverted(written, {key: plan.env.previous(key) for key in written})
        if text != current.text:
            write_atomic(service.env_file, text)
        return edited_since

    def _start_again(self, service: Service, progress: _Progress) -> str:
        """Start a service stopped for a change that did not happen."""
        # undochange checks the snapshot before it touches a file, so the folder is almost surely as it was.
        hint = (f"; should the folder be partly restored, `snapper -c {progress.snapper_config} undochange "
                f"{progress.snapshot}..0` puts back the state before" if progress.snapshot is not None else "")
        try:
            self.control.start(service)
        except CipugError as error:
            return f"it could NOT be started again: {error.message}{hint}"
        return f"it was started again{hint}"

    @staticmethod
    def _data_hint(service: Service, progress: _Progress) -> str:
        # The new images may already have changed the data; only a person can judge whether to undo that.
        if progress.snapshot is None:
            return ""
        return (f"; the data was left as it is, to restore it too: `cipug rollback {service.name} --snapshot "
                f"{progress.snapshot}` or `snapper -c {progress.snapper_config} undochange {progress.snapshot}..0`")

    @staticmethod
    def _restored_detail(transaction: Transaction, progress: _Progress) -> str:
        if progress.did(RestoreFolder):
            return f"folder restored to snapshot {transaction.restored_snapshot}"
        return transaction.detail

    def _success_line(self, transaction: Transaction, progress: _Progress) -> str:
        name = transaction.service.name
        if transaction.kind is Kind.REPAIR:
            return f"{name}: {transaction.detail}"
        if transaction.kind is Kind.DRIFT:
            return f"{name}: restarted on its pins ({transaction.detail})"
        if transaction.kind is Kind.FOLDER_ROLLBACK and progress.snapshot is None:
            return f"{name}: rolled back to snapshot {transaction.restored_snapshot} and started, {transaction.detail}"
        if transaction.kind is Kind.FOLDER_ROLLBACK:
            return (f"{name}: rolled back to snapshot {transaction.restored_snapshot} and started; the state before the rollback "
                    f"is snapshot {progress.snapshot}")
        restarted = " and restarted" if progress.did(Restart) else ""
        return f"{name}: {transaction.kind.outcome}{restarted}"

    def _record(self, transaction: Transaction, progress: _Progress, outcome: str, detail: str,
                did_not_come_up: bool = False) -> None:
        service = transaction.service.name
        if transaction.kind is Kind.FOLDER_ROLLBACK:
            after = transaction.plan.entries if progress.restored is None else progress.restored
            self.records += folder_records(service, transaction.plan.entries, after, progress.snapshot,
                                           progress.snapper_config, outcome, detail)
            return
        time_text = history.now_iso()
        versions = progress.versions
        records = [history.Record(time_text, service, change.entry.hashed_key, change.entry.reference,
                                  change.entry.current, change.new, progress.snapshot, progress.snapper_config,
                                  outcome, detail, versions.get(change.entry.current or ""), versions.get(change.new),
                                  did_not_come_up)
                   for change in transaction.changes]
        # A repair that changed no pin (a folder rollback stopped before its restore) is still worth a line.
        if not records and transaction.kind is Kind.REPAIR:
            records = [history.Record(time_text, service, "", "", None, None, progress.snapshot,
                                      progress.snapper_config, outcome, detail)]
        self.records += records


def folder_records(service: str, before: Sequence[ImageEntry], after: Sequence[ImageEntry], snapshot: int | None,
                   snapper_config: str | None, outcome: str, detail: str) -> list[history.Record]:
    """History records of a folder rollback: each image's pin before and after it."""
    time_text = history.now_iso()
    old = {entry.hashed_key: entry for entry in before}
    new = {entry.hashed_key: entry for entry in after}
    records = []
    for key in dict.fromkeys([*old, *new]):
        entry = new.get(key) or old[key]
        records.append(history.Record(time_text, service, key, entry.reference,
                                      old[key].current if key in old else None,
                                      new[key].current if key in new else None,
                                      snapshot, snapper_config, outcome, detail))
    # A folder without image entries is still worth a line: its data went back.
    return records or [history.Record(time_text, service, "", "", None, None, snapshot, snapper_config, outcome,
                                      detail)]


def make_applier(settings: Settings, log: Log, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> Applier:
    """An Applier with the configured programs; exit 10 when one it needs is missing."""
    require_tools(change_tools(settings))
    runner = Runner(log)
    return Applier(settings, log, ServiceControl(settings, runner, sleep=sleep, clock=clock),
                   Snapper(settings.snapper_tool, runner))


def apply_all(settings: Settings, log: Log, applier: Applier, transactions: list[Transaction]) -> list[ExitCode]:
    """Run every transaction; their exit codes. History gets every record, even when interrupted."""
    codes = []
    try:
        for transaction in transactions:
            codes.append(applier.run(transaction))
    finally:
        history.append(settings.history_file, applier.records, log)
    return codes


def repair_interrupted(settings: Settings, log: Log, applier: Applier, pending: list[tuple[Path, Intent]],
                       services: list[Service]) -> tuple[list[ExitCode], set[str]]:
    """Make whole what interrupted runs left in `services`; the exit codes, and the services still not whole.

    Records of other folders are left for the runs that work on them (another services root, a service
    the filters leave out).
    """
    by_folder = {str(service.folder): service for service in services}
    codes: list[ExitCode] = []
    broken: set[str] = set()
    for path, intent in pending:
        service = by_folder.get(intent.folder)
        if service is None:
            if Path(intent.folder).parent == settings.services_root and not Path(intent.folder).is_dir():
                log.warning(f"{intent.service}: an interrupted run left {path}, but {intent.folder} is gone; "
                            "remove that file")
            continue
        log.info(f"{service.name}: a run was interrupted at {intent.started} while changing it; repairing")
        transaction = repair_transaction(settings, service, intent)
        try:
            code = applier.run(transaction, intent)
        finally:
            history.append(settings.history_file, applier.records, log)
            applier.records = []
        codes.append(code)
        if code != ExitCode.OK:
            broken.add(service.name)
    return codes, broken
