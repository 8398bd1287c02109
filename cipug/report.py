"""How plans and history read as lines: what `update`, `check`, `history` and the previews print."""

from __future__ import annotations

from collections.abc import Mapping

from .files.history import Record
from .log import Log
from .plan import Change, ServicePlan


def short_digest(reference: str | None) -> str:
    """`sha256:` and the first 12 hex digits of a pinned reference's digest; `(none)` for no pin."""
    if not reference:
        return "(none)"
    return reference.rsplit("@", 1)[-1][:19]


def versions_text(old: str | None, new: str | None, versions: Mapping[str, str]) -> str:
    """`1.27.1 → 1.27.2` for two pinned references, where a version of either is known; else ""."""
    if not (versions.get(old or "") or versions.get(new or "")):
        return ""
    return f"{versions.get(old or '', '?')} → {versions.get(new or '', '?')}"


def change_versions(change: Change, versions: Mapping[str, str]) -> str:
    return versions_text(change.entry.current, change.new, versions)


def report_plan(plan: ServicePlan, log: Log, dry_run: bool = False, versions: Mapping[str, str] | None = None) -> None:
    """The lines a run prints for one service before it changes anything; with the images' `versions`
    where known (pinned reference → version)."""
    versions = versions or {}
    name = plan.service.name
    if plan.error is not None:
        log.error(f"{name}: {plan.error.message}")
    elif not plan.entries:
        log.verbose(f"{name}: no *_IMAGE_TAGGED entries")
    elif not plan.changes and not plan.skipped:
        held = f"; {plan.hold}" if plan.hold else ""
        log.info(f"{name}: up to date ({len(plan.entries)} image{'s' if len(plan.entries) != 1 else ''}){held}")
    else:
        if plan.skipped:
            log.info(skipped_line(plan, dry_run, versions))
        if dry_run:
            for change in plan.changes:
                between = change_versions(change, versions)
                log.info(f"{name}: would set {change.entry.hashed_key}={change.new} "
                         f"(was {change.entry.current or 'unset'}{'; ' + between if between else ''})")


def skipped_line(plan: ServicePlan, dry_run: bool = False, versions: Mapping[str, str] | None = None) -> str:
    """One line for the changes of a service that do not go ahead (held, failed before, not due)."""
    versions = versions or {}
    parts = []
    for skip in plan.skipped:
        between = change_versions(skip.change, versions)
        parts.append(f"{skip.change.entry.hashed_key} -> {short_digest(skip.change.new)}"
                     f"{' (' + between + ')' if between else ''} {skip.detail}")
    return f"{plan.service.name}: {'would not update' if dry_run else 'not updated'}: {'; '.join(parts)}"


def history_line(record: Record) -> str:
    versions = (f"{record.old_version or '?'} -> {record.new_version or '?'}  "
                if record.old_version or record.new_version else "")
    line = (f"{record.time}  {record.service}  {record.outcome:<11}  {record.entry or '-'}  {record.tagged or '-'}  "
            f"{versions}{short_digest(record.old)} -> {short_digest(record.new)}")
    if record.snapshot is not None:
        line += f"  snapshot {record.snapshot}"
    return line + (f"  ({record.detail})" if record.detail else "")
