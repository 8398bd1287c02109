"""The optional command line (`pip install 'cipug[cli]'`): update, check, check-snapshots, config,
history and rollback.

Only cipug.main imports this, for a subcommand: the timer's argument-free run never loads Typer.
Each command returns its exit code; a CipugError becomes one line on stderr and its code.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer

from . import errors, history
from .commands import require_tools
from .config import Config, load_config
from .errors import CipugError
from .log import Log
from .rollback import roll_back
from .snapcheck import check_snapshots as check_all
from .update import ServicePlan, report_plan, resolve_plans, run_update, select_services, short_digest

app = typer.Typer(
    name="cipug",
    help="Pin the container images of compose services to digests, snapshot and update them, and roll them back.\n\n"
         "Configured by CIPUG_* environment variables and the JSON file named by CIPUG_CONFIG_FILE (see "
         "`cipug config`). Without arguments cipug updates every service, as the systemd timer runs it; the "
         "flags --update, --check-snapshots, --print-config and --print-config-json keep working.",
    epilog="Exit codes: 0 success, 1 `check` found updates, 2 bad command line, 10 and up an error (see README).",
    add_completion=False,
    # Plain output like the stdlib path's, and tracebacks of real bugs unadorned.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _exit_code(command: Callable[..., int]) -> Callable[..., None]:
    """Turn a command's returned code, or a CipugError's, into the process exit code."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> None:
        try:
            code = command(*args, **kwargs)
        except CipugError as error:
            Log().error(error.message)
            code = error.code
        raise typer.Exit(code)

    return run


def _setup() -> tuple[Config, Log]:
    config = load_config()
    return config, Log(config.verbosity)


JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of lines")]


@app.command()
@_exit_code
def update(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="resolve and report what would change, change nothing "
                                                             "(no write, snapshot, pull or restart)")] = False,
    service: Annotated[list[str] | None, typer.Option(
        "--service", "-s", metavar="NAME", help="update only this service; repeat for more")] = None,
) -> int:
    """Update the services whose image digests moved.

    Per service: snapshot, pin the new digests in .env, pull, restart, wait until up (and put the
    old images back when it does not come up).

    \b
    Examples:
      cipug update                      # what the timer runs
      cipug update --dry-run            # show what would change
      cipug update --service nextcloud --service db
    """
    config, log = _setup()
    return run_update(config, log, service_names=service or (), dry_run=dry_run)


def _check_json(plan: ServicePlan) -> dict[str, object]:
    available = {change.entry.hashed_key: change.new for change in plan.changes}
    status = "error" if plan.error else "pending" if plan.changes else "current"
    return {
        "service": plan.service.name,
        "status": status,
        "error": {"message": plan.error.message, "code": plan.error.code} if plan.error else None,
        "entries": [{
            "entry": entry.hashed_key,
            "tagged": entry.reference,
            "current": entry.current,
            # Unknown when the service could not be resolved.
            "available": None if plan.error else available.get(entry.hashed_key, entry.current),
            "pending": None if plan.error else entry.hashed_key in available,
        } for entry in plan.entries],
    }


@app.command()
@_exit_code
def check(json_output: JsonOption = False) -> int:
    """Report which services have updates, changing nothing.

    Exit 0 when every image is current, 1 when updates are pending, an error code (10 and up)
    when a service could not be checked: fit for monitoring. --json prints a list with one
    object per service: service, status (current, pending, error), error, and entries with
    entry, tagged, current and available references and pending.

    \b
    Examples:
      cipug check
      cipug check --json | jq -r '.[] | select(.status == "pending") | .service'
    """
    config, log = _setup()
    if config.resolver == "skopeo":
        require_tools([config.skopeo_tool])
    plans = resolve_plans(config, log, select_services(config, log))
    if json_output:
        for plan in plans:
            if plan.error is not None:
                log.error(f"{plan.service.name}: {plan.error.message}")
        print(json.dumps([_check_json(plan) for plan in plans], indent=2))
    else:
        for plan in plans:
            report_plan(plan, log, dry_run=True)
    failures = [plan.error.code for plan in plans if plan.error is not None]
    if failures:
        return errors.combine_codes(failures)
    pending = [plan.service.name for plan in plans if plan.changes]
    if not json_output:
        log.info(f"updates pending: {', '.join(pending)}" if pending else "every image is current")
    return errors.UPDATES_PENDING if pending else errors.OK


@app.command("check-snapshots")
@_exit_code
def check_snapshots() -> int:
    """Check that every service has recent snapshots.

    Exit 40 when a service has no snapper/btrbk snapshot younger than its max age.

    Needs SNAPSHOTS_DIR_SNAPPER and/or SNAPSHOTS_DIR_BTRBK.

    \b
    Example:
      CIPUG_SNAPSHOTS_DIR_SNAPPER=.snapshots cipug check-snapshots
    """
    config, log = _setup()
    return check_all(config, select_services(config, log), log, time.time())


@app.command()
@_exit_code
def config(json_output: JsonOption = False) -> int:
    """Print the effective settings.

    As KEY=value lines, or JSON with --json.

    \b
    Examples:
      cipug config
      cipug config --json | jq .HISTORY_FILE
    """
    settings, _ = _setup()
    print(json.dumps(settings.as_json(), indent=2) if json_output else "\n".join(settings.as_lines()))
    return errors.OK


def _history_line(record: history.Record) -> str:
    line = (f"{record.time}  {record.service}  {record.outcome:<11}  {record.entry or '-'}  {record.tagged or '-'}  "
            f"{short_digest(record.old)} -> {short_digest(record.new)}")
    if record.snapshot is not None:
        line += f"  snapshot {record.snapshot}"
    return line + (f"  ({record.detail})" if record.detail else "")


@app.command("history")
@_exit_code
def history_command(
    service: Annotated[str | None, typer.Argument(metavar="SERVICE", help="show only this service")] = None,
    json_output: JsonOption = False,
) -> int:
    """Show every change cipug made, oldest first.

    Per image: time, service, outcome (updated, rolled back, failed), entry, tag, old and new
    digest, and the snapper snapshot taken before the change (what `cipug rollback` goes back
    to). Read from HISTORY_FILE; damaged lines are skipped with a warning.

    \b
    Examples:
      cipug history
      cipug history nextcloud
      cipug history --json | jq '.[] | select(.outcome == "rolled back")'
    """
    config, log = _setup()
    records = [record for record in history.read(config.history_file, log)
               if service is None or record.service == service]
    if json_output:
        print(json.dumps([record._asdict() for record in records], indent=2))
    elif records:
        print("\n".join(_history_line(record) for record in records))
    else:
        log.info(f"no history{f' for {service}' if service else ''} in {config.history_file}")
    return errors.OK


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _ask(question: str) -> bool:
    if not _stdin_is_terminal():
        # Waiting for an answer nobody can give would hang a script; doing it unasked is worse.
        raise CipugError(f"{question} Not asking, as stdin is no terminal: add --yes to go ahead without asking",
                         errors.USAGE)
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        # End of input (Ctrl-D) is a no.
        return False


@app.command()
@_exit_code
def rollback(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="the service folder's name")],
    snapshot: Annotated[int | None, typer.Option(
        "--snapshot", metavar="N", min=1,
        help="go back to snapper snapshot N instead of the one taken before the last update; with --image-only: "
             "put back the pins from before the update that took snapshot N")] = None,
    image_only: Annotated[bool, typer.Option(
        "--image-only", help="only write back the image pins from before the last update (from history) and "
                             "restart, leaving data as it is")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> int:
    """Roll a service back to before its last update.

    Data and images together, or only the images.

    By default: stop the service, take a snapshot of its current state, restore its folder with
    `snapper undochange N..0` to snapshot N, the one taken before its last update (data, .env and
    so the old image digests, compose file), pull, start it and wait until it is up.
    --image-only instead writes back the pins the last update replaced and restarts, like an update
    does; it refuses when an image had no pin before (its first pin), as there is nothing to go back
    to. Shows what it will do and asks first, unless --yes; without a terminal and without --yes it
    refuses (exit 2). Recorded in history as "rolled back". The next update run moves the service
    forward again while its tags point to the newer images: to keep it back, add it to
    SERVICES_FILTER_EXCLUDE.

    \b
    Examples:
      cipug rollback nextcloud                  # to the snapshot before the last update
      cipug rollback nextcloud --image-only     # only the images, data as it is
      cipug rollback nextcloud --snapshot 41 --yes
    """
    config, log = _setup()
    return roll_back(config, log, service, snapshot=snapshot, image_only=image_only,
                     confirm=(lambda question: True) if yes else _ask)


def run_cli(argv: list[str]) -> int:
    """Run a subcommand line (argv without the program name); the exit code."""
    try:
        app(args=argv, prog_name="cipug")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return errors.OK
