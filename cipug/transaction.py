"""One service transaction: the steps that change a service, as data, run in the order that keeps it whole.

An update, an image-only rollback and a folder rollback are each a list of steps (check the
compose tool, snapshot, write .env, pull, stop, restore the folder, restart or start, wait until
up). Previews print the steps a transaction will run; `Applier` runs them. When a step fails,
what the finished steps changed is put back, so a service ends fully as it was or fully changed:
written pins are put back, and containers that were touched are started again on them (for an
update only with AUTO_ROLLBACK). A folder that `snapper undochange` restored is not put back:
that was the point, and what went wrong after it is said and recorded. Every transaction ends
with history records of what really happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from .errors import CipugError, ExitCode, Interrupted
from .files import history
from .files.atomic import read_text, write_atomic
from .log import Log
from .plan import Change, ImageEntry, ServicePlan, read_plan
from .programs.compose import ServiceControl
from .programs.snapper import Snapper
from .report import short_digest
from .services import Service
from .settings import Settings


class Kind(Enum):
    """What a transaction does."""

    UPDATE = "update"
    IMAGE_ROLLBACK = "image-only rollback"
    FOLDER_ROLLBACK = "folder rollback"

    @property
    def outcome(self) -> str:
        """History's outcome when it succeeds."""
        return history.UPDATED if self is Kind.UPDATE else history.ROLLED_BACK


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
class Pull:
    # A folder rollback starts with the images at hand when pulling fails: they may still be there.
    required: bool = True

    def describe(self) -> str:
        return "pull"


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
    def describe(self) -> str:
        return "restart"


@dataclass(frozen=True)
class Start:
    def describe(self) -> str:
        return "start it"


@dataclass(frozen=True)
class WaitUntilUp:
    timeout: int

    def describe(self) -> str:
        return f"wait up to {self.timeout} s until it is up"


Step = CheckCompose | TakeSnapshot | WritePins | Pull | Stop | RestoreFolder | Restart | Start | WaitUntilUp
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
        steps.append(Pull())
    if settings.service_stop_start:
        steps.append(Restart())
        if settings.auto_rollback and settings.health_timeout > 0:
            steps.append(WaitUntilUp(settings.health_timeout))
    return Transaction(kind, plan, tuple(steps), tuple(plan.changes), detail)


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


def snapshot_description(service: str, changes: list[Change]) -> str:
    images = ", ".join(f"{change.entry.reference} -> {change.resolution.name}@{change.resolution.digest[:19]}"
                       for change in changes)
    return f"cipug {service}: {images}"


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

    def run(self, transaction: Transaction) -> ExitCode:
        """Run one transaction; its exit code. Interrupted is re-raised after the service was put back."""
        progress = _Progress()
        try:
            for step in transaction.steps:
                progress.current = step
                self._do(step, transaction, progress)
                progress.done.append(step)
        except CipugError as error:
            outcome, detail = self._put_back(transaction, progress, error)
            self._record(transaction, progress, outcome, detail)
            if isinstance(error, Interrupted):
                raise
            return error.code
        self._record(transaction, progress, transaction.kind.outcome, self._restored_detail(transaction, progress))
        self.log.success(self._success_line(transaction, progress))
        return ExitCode.OK

    def _do(self, step: Step, transaction: Transaction, progress: _Progress) -> None:
        service, log = transaction.service, self.log
        match step:
            case CheckCompose():
                self.control.check(service)
            case TakeSnapshot(description=description):
                progress.snapper_config = self.snapper.config_for(service.folder)
                progress.snapshot = self.snapper.create(progress.snapper_config, description)
                log.verbose(f"{service.name}: snapper snapshot {progress.snapshot} (config {progress.snapper_config})")
            case WritePins():
                self._write_pins(transaction)
            case Pull(required=required):
                try:
                    self.control.pull(service, self._pins(transaction, progress))
                except CipugError as error:
                    if required:
                        raise
                    log.warning(f"{error.message}; starting with the images at hand")
                else:
                    log.verbose(f"{service.name}: pulled")
            case Stop():
                self.control.stop(service)
            case RestoreFolder(snapper_config=snapper_config, snapshot=snapshot):
                self.snapper.undo_change(snapper_config, snapshot)
                progress.restored = read_plan(service).entries
            case Restart():
                self.control.restart(service)
            case Start():
                self.control.start(service)
            case WaitUntilUp(timeout=timeout):
                problems = self.control.wait_until_up(service, timeout)
                if problems:
                    raise CipugError(f"not up within {timeout} s: " + "; ".join(problems), ExitCode.RESTART_FAILED)

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
            new_text = plan.env.updated(values, after)
        except OSError as error:
            raise CipugError(f"{service.env_file} cannot be read: {error.strerror}",
                             ExitCode.ENV_WRITE_FAILED) from None
        except ValueError as error:
            raise CipugError(f"{service.env_file}: {error}", ExitCode.ENV_WRITE_FAILED) from None
        write_atomic(service.env_file, new_text)
        for change in transaction.changes:
            self.log.info(f"{service.name}: {change.entry.hashed_key} {change.resolution.name} "
                          f"{short_digest(change.entry.current)} -> {short_digest(change.new)}")

    def _put_back(self, transaction: Transaction, progress: _Progress, error: CipugError) -> tuple[str, str]:
        """Undo what the finished steps changed, say what state the service is in; history's outcome and detail."""
        name = transaction.service.name
        if progress.did(RestoreFolder):
            # The folder is as the user asked; only what came after went wrong.
            detail = f"{self._restored_detail(transaction, progress)}; {error.message}"
            self.log.error(f"{name}: {self._restored_detail(transaction, progress)}, but {error.message}")
            return history.ROLLED_BACK, detail
        state, outcome = self._undo(transaction, progress)
        self.log.error(f"{name}: {error.message}; {state}")
        return outcome, f"{transaction.detail}: {error.message}" if transaction.detail else error.message

    def _undo(self, transaction: Transaction, progress: _Progress) -> tuple[str, str]:
        """Put back pins and containers; what state that leaves the service in, and history's outcome."""
        service, settings = transaction.service, self.settings
        touched = progress.touched_containers()
        if not progress.did(WritePins):
            if not touched:
                return "nothing was changed", history.FAILED
            return self._start_again(service, progress), history.FAILED
        try:
            write_atomic(service.env_file, transaction.plan.text)
        except CipugError as restore_error:
            return f"the old .env could NOT be put back: {restore_error.message}", history.FAILED
        hint = self._data_hint(service, progress)
        if not touched:
            return "the old .env was put back", history.FAILED
        if not settings.auto_rollback:
            return f"the old .env was put back, the service was not restarted (AUTO_ROLLBACK is off){hint}", \
                history.FAILED
        try:
            self.control.restart(service)
        except CipugError as restart_error:
            return (f"the old .env was put back but restarting on the old images failed too: "
                    f"{restart_error.message}{hint}"), history.FAILED
        # An update put back is rolled back; a rollback put back did not happen.
        outcome = history.ROLLED_BACK if transaction.kind is Kind.UPDATE else history.FAILED
        return f"rolled back to the old images{hint}", outcome

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
        if transaction.kind is Kind.FOLDER_ROLLBACK:
            return (f"{name}: rolled back to snapshot {transaction.restored_snapshot} and started; the state before the rollback "
                    f"is snapshot {progress.snapshot}")
        restarted = " and restarted" if progress.did(Restart) else ""
        return f"{name}: {transaction.kind.outcome}{restarted}"

    def _record(self, transaction: Transaction, progress: _Progress, outcome: str, detail: str) -> None:
        service = transaction.service.name
        if transaction.kind is Kind.FOLDER_ROLLBACK:
            after = transaction.plan.entries if progress.restored is None else progress.restored
            self.records += folder_records(service, transaction.plan.entries, after, progress.snapshot,
                                           progress.snapper_config, outcome, detail)
            return
        time_text = history.now_iso()
        self.records += [history.Record(time_text, service, change.entry.hashed_key, change.entry.reference,
                                        change.entry.current, change.new, progress.snapshot, progress.snapper_config,
                                        outcome, detail)
                         for change in transaction.changes]


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


def apply_all(settings: Settings, log: Log, applier: Applier, transactions: list[Transaction]) -> list[ExitCode]:
    """Run every transaction; their exit codes. History gets every record, even when interrupted."""
    codes = []
    try:
        for transaction in transactions:
            codes.append(applier.run(transaction))
    finally:
        history.append(settings.history_file, applier.records, log)
    return codes
