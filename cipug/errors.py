"""Exit codes and the error type that carries one.

User errors are raised as CipugError and turned into one line and an exit code by
`exit_code_of`, which every command runs through; nothing a user can cause should end in a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import IntEnum

from .log import Log


class ExitCode(IntEnum):
    """The process exit codes; `description` is what README's table says of each."""

    description: str

    def __new__(cls, value: int, description: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    OK = 0, "success (for `check`: every image is current)"
    UPDATES_PENDING = 1, "`check` only: at least one service has an image whose digest moved"
    USAGE = 2, (
        "bad command line, a subcommand without the cli extra installed, or a `rollback` without a terminal to "
        "confirm on and without --yes"
    )
    ROLLBACK_REFUSED = 3, (
        "a `rollback` or `adopt` that cannot be done as asked: no update to roll back, no earlier pin, no such "
        "snapshot, a folder that cannot be written, a compose file cipug cannot edit safely; nothing was changed"
    )
    DRIFT = 4, "`check` only: no update is pending, but a service's containers do not run what its `.env` pins"
    TOOL_MISSING = 10, "a required tool (skopeo, snapper, compose tool, …) is missing"
    LOCKED = 11, "another cipug run holds the lock"
    NOTIFY_EXTRA_MISSING = 12, "`NOTIFY_URLS` is set, but the `notify` extra (Apprise) is not installed; nothing was changed"
    FILE_NOT_FOUND = 20, "a file was not found (config file)"
    DIRECTORY_NOT_FOUND = 21, "a directory was not found (`SERVICES_ROOT`, a service)"
    CONFIG_UNREADABLE = 22, "the config file cannot be read or is not valid JSON"
    CONFIG_NOT_OBJECT = 23, "the config file is not a JSON object"
    WRONG_TYPE = 24, "a setting has a value of the wrong type"
    INVALID_VALUE = 25, "a setting has an invalid value, is unknown, or is required and missing"
    ENV_FILE_INVALID = 26, "a service's `.env` cannot be parsed"
    COMPOSE_UNUSABLE = 30, "the compose tool does not work in a service folder"
    SNAPSHOT_FAILED = 31, "the snapper snapshot failed (no config for the folder, snapper error)"
    ENV_WRITE_FAILED = 32, "a service's `.env` could not be written"
    PULL_FAILED = 33, "pulling the new images failed; the old `.env` was put back"
    RESTART_FAILED = 34, "restarting failed or the service did not come up; the old images were put back"
    RESOLVE_FAILED = 35, ("a tag could not be resolved (registry unreachable, unknown tag), or was not checked because "
                          "its registry answered a pull-limit 429 in this run")
    STATE_WRITE_FAILED = 36, (
        "cipug's state file (holds, failed digests, first-seen times) could not be written for `hold`, `release` "
        "or the hold of a `rollback`"
    )
    SNAPSHOTS_STALE = 40, "snapshots missing or older than their max age"
    INTERRUPTED = 130, "stopped by SIGINT or SIGTERM (a service being changed was put back first)"
    SEVERAL_ERRORS = 255, "several different errors in one run"


class CipugError(Exception):
    """An error to report as one line, ending the run (or one service) with `code`."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class Interrupted(CipugError):
    """SIGINT or SIGTERM arrived; raised so a service half-way through an update is put back first."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}", ExitCode.INTERRUPTED)


def combine_codes(codes: Iterable[ExitCode]) -> ExitCode:
    """The exit code of a run whose services ended with `codes`."""
    failures = {code for code in codes if code != ExitCode.OK}
    if not failures:
        return ExitCode.OK
    if len(failures) == 1:
        return failures.pop()
    return ExitCode.SEVERAL_ERRORS


def exit_code_of(command: Callable[[], ExitCode]) -> ExitCode:
    """Run a command; its exit code. The one place where a CipugError becomes one line and its code."""
    try:
        return command()
    except CipugError as error:
        Log().error(error.message)
        return error.code
