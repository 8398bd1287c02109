"""The optional command line (`pip install 'cipug[cli]'`): update, check, check-snapshots, config,
history, rollback, hold, release and adopt.

Only cipug.main imports this, for a subcommand: the timer's argument-free run never loads Typer.
Each command returns its exit code; a CipugError becomes one line on stderr and its code.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Annotated, ParamSpec

import typer

from .commands.adopt import adopt as adopt_services
from .commands.check import run_check
from .commands.config import run_config
from .commands.history import run_history
from .commands.hold import hold as hold_service
from .commands.hold import release as release_service
from .commands.rollback import roll_back
from .commands.snapshots import check_snapshots as check_all
from .commands.update import run_update
from .errors import CipugError, ExitCode, exit_code_of
from .log import Log
from .services import select_services
from .settings import Settings, load_settings

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

Arguments = ParamSpec("Arguments")


def _exit_code(command: Callable[Arguments, ExitCode]) -> Callable[Arguments, None]:
    """End the process with the command's exit code."""

    @functools.wraps(command)
    def run(*args: Arguments.args, **kwargs: Arguments.kwargs) -> None:
        raise typer.Exit(exit_code_of(lambda: command(*args, **kwargs)))

    return run


def _setup() -> tuple[Settings, Log]:
    settings = load_settings()
    return settings, Log(settings.verbosity)


JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of lines")]
RefreshOption = Annotated[bool, typer.Option("--refresh", help="look every tag up, not trusting the cache this once "
                                                              "(what is found is still saved to it)")]


@app.command()
@_exit_code
def update(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="resolve and report what would change, change nothing "
                                                             "(no write, snapshot, pull or restart)")] = False,
    service: Annotated[list[str] | None, typer.Option(
        "--service", "-s", metavar="NAME", help="update only this service; repeat for more")] = None,
    refresh: RefreshOption = False,
) -> ExitCode:
    """Update the services whose image digests moved.

    Per service: snapshot, pin the new digests in .env, pull, restart, wait until up (and put the
    old images back when it does not come up).

    \b
    Examples:
      cipug update                      # what the timer runs
      cipug update --dry-run            # show what would change
      cipug update --service nextcloud --service db
      cipug update --refresh            # ask the registries now, not the cache
    """
    settings, log = _setup()
    return run_update(settings, log, service_names=service or (), dry_run=dry_run, refresh=refresh)


@app.command()
@_exit_code
def check(json_output: JsonOption = False, refresh: RefreshOption = False) -> ExitCode:
    """Report which services have updates, changing nothing.

    Exit 0 when every image is current, 1 when updates are pending, an error code (10 and up)
    when a service could not be checked: fit for monitoring. Held services, digests that failed
    before and digests not due yet (UPDATE_MIN_AGE) are shown but are not pending. --json prints
    a list with one object per service: service, status (current, pending, held, error), held,
    error, and entries with entry, tagged, current and available references, pending, and
    skipped (reason, detail, due) for a change the next run leaves alone.

    \b
    Examples:
      cipug check
      cipug check --json | jq -r '.[] | select(.status == "pending") | .service'
      cipug check --refresh             # right after a tag moved, not waiting for the cache
    """
    settings, log = _setup()
    return run_check(settings, log, json_output=json_output, refresh=refresh)


@app.command("check-snapshots")
@_exit_code
def check_snapshots() -> ExitCode:
    """Check that every service has recent snapshots.

    Exit 40 when a service has no snapper/btrbk snapshot younger than its max age.

    Needs SNAPSHOTS_DIR_SNAPPER and/or SNAPSHOTS_DIR_BTRBK.

    \b
    Example:
      CIPUG_SNAPSHOTS_DIR_SNAPPER=.snapshots cipug check-snapshots
    """
    settings, log = _setup()
    return check_all(settings, select_services(settings, log), log, time.time())


@app.command()
@_exit_code
def config(json_output: JsonOption = False) -> ExitCode:
    """Print the effective settings.

    As KEY=value lines, or JSON with --json.

    \b
    Examples:
      cipug config
      cipug config --json | jq .HISTORY_FILE
    """
    settings, _ = _setup()
    return run_config(settings, json_output=json_output)


@app.command("history")
@_exit_code
def history_command(
    service: Annotated[str | None, typer.Argument(metavar="SERVICE", help="show only this service")] = None,
    json_output: JsonOption = False,
) -> ExitCode:
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
    settings, log = _setup()
    return run_history(settings, log, service, json_output=json_output)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _ask(question: str) -> bool:
    if not _stdin_is_terminal():
        # Waiting for an answer nobody can give would hang a script; doing it unasked is worse.
        raise CipugError(f"{question} Not asking, as stdin is no terminal: add --yes to go ahead without asking",
                         ExitCode.USAGE)
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
    hold: Annotated[bool, typer.Option(
        "--hold/--no-hold", help="afterwards hold the service, so update runs leave it alone until `cipug release "
                                 "SERVICE` (the default)")] = True,
) -> ExitCode:
    """Roll a service back to before its last update.

    Data and images together, or only the images.

    By default: stop the service, take a snapshot of its current state, restore its folder with
    `snapper undochange N..0` to snapshot N, the one taken before its last update (data, .env and
    so the old image digests, compose file), pull, start it and wait until it is up.
    --image-only instead writes back the pins the last update replaced and restarts, like an update
    does; it refuses when an image had no pin before (its first pin), as there is nothing to go back
    to. Shows what it will do and asks first, unless --yes; without a terminal and without --yes it
    refuses (exit 2). Recorded in history as "rolled back". Afterwards the service is held (the
    hold names the digests rolled back from): update runs check it but change nothing until
    `cipug release SERVICE`. With --no-hold the next update run moves it forward again while its
    tags point to the newer images.

    \b
    Examples:
      cipug rollback nextcloud                  # to the snapshot before the last update
      cipug rollback nextcloud --image-only     # only the images, data as it is
      cipug rollback nextcloud --snapshot 41 --yes
    """
    settings, log = _setup()
    return roll_back(settings, log, service, snapshot=snapshot, image_only=image_only, hold=hold,
                     confirm=(lambda question: True) if yes else _ask)


@app.command()
@_exit_code
def adopt(
    services: Annotated[list[str] | None, typer.Argument(metavar="SERVICE...", help="service folders' names")] = None,
    every: Annotated[bool, typer.Option("--all", help="every folder under SERVICES_ROOT with a compose file")] = False,
    pin: Annotated[bool, typer.Option("--pin/--no-pin", help="pin the adopted images at once, as an update run "
                                                             "does (the default), or leave that to the next run")] = True,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> ExitCode:
    """Bring existing compose projects under cipug.

    For each compose service whose `image:` is a plain `repo:tag`, rewrite that line to
    `image: ${SERVICE_<NAME>_IMAGE_HASHED}` and add `SERVICE_<NAME>_IMAGE_TAGGED=repo:tag` to
    .env (NAME: the folder's name, and the compose service's where it differs). Only those lines
    change, every other byte stays, both files are written atomically. A compose file cipug cannot
    edit safely (anchors or aliases, `extends`, several documents, an image already using other
    variables) is refused with the reason and the line. Shows the change as a diff and asks first,
    unless --yes; then pins the images like a first update run (snapshot, write, pull, restart).

    \b
    Examples:
      cipug adopt nextcloud
      cipug adopt --all --no-pin
      cipug adopt gitea --yes
    """
    if bool(services) == every:
        raise CipugError("name the services to adopt, or give --all (not both)", ExitCode.USAGE)
    settings, log = _setup()
    return adopt_services(settings, log, services or [], every=every, pin=pin,
                          confirm=(lambda question: True) if yes else _ask,
                          pin_service=lambda names: run_update(settings, log, service_names=names))


EntryOption = Annotated[str | None, typer.Option(
    "--entry", metavar="KEY", help="only this image entry (its *_IMAGE_HASHED or *_IMAGE_TAGGED key)")]


@app.command()
@_exit_code
def hold(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="the service folder's name")],
    entry: EntryOption = None,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="why, shown by check and update")] = "",
) -> ExitCode:
    """Hold a service (or one image entry) on its pins.

    A held service is still checked (`cipug check` shows it as held, with the digest that is
    available) but never changed by `cipug update` or the timer, until `cipug release`.

    \b
    Examples:
      cipug hold nextcloud --reason "waiting for the 30.0.1 fix"
      cipug hold nextcloud --entry SERVICE_NEXTCLOUD_DB_IMAGE_HASHED
    """
    settings, log = _setup()
    return hold_service(settings, log, service, entry=entry, reason=reason)


@app.command()
@_exit_code
def release(service: Annotated[str, typer.Argument(metavar="SERVICE", help="the service folder's name")],
            entry: EntryOption = None) -> ExitCode:
    """End a hold, and forget the digests that failed.

    Without --entry: the service's hold and those of its entries. A digest that failed (an update
    rolled back automatically, which later runs skip) is forgotten, so the next update run tries it
    again.

    \b
    Examples:
      cipug release nextcloud
      cipug release nextcloud --entry SERVICE_NEXTCLOUD_DB_IMAGE_HASHED
    """
    settings, log = _setup()
    return release_service(settings, log, service, entry=entry)


def run_cli(argv: list[str]) -> int:
    """Run a subcommand line (argv without the program name); the exit code."""
    try:
        app(args=argv, prog_name="cipug")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return ExitCode.OK
