"""Exit codes and the error type that carries one.

User errors are raised as CipugError and printed as one line by the entry
point; nothing a user can cause should end in a traceback.
"""

from __future__ import annotations

OK = 0
UPDATES_PENDING = 1
USAGE = 2
TOOL_MISSING = 10
LOCKED = 11
FILE_NOT_FOUND = 20
DIRECTORY_NOT_FOUND = 21
CONFIG_UNREADABLE = 22
CONFIG_NOT_OBJECT = 23
WRONG_TYPE = 24
INVALID_VALUE = 25
ENV_FILE_INVALID = 26
COMPOSE_UNUSABLE = 30
SNAPSHOT_FAILED = 31
ENV_WRITE_FAILED = 32
PULL_FAILED = 33
RESTART_FAILED = 34
RESOLVE_FAILED = 35
SNAPSHOTS_STALE = 40
INTERRUPTED = 130
SEVERAL_ERRORS = 255

EXIT_CODES: dict[int, str] = {
    OK: "success (for `check`: every image is current)",
    UPDATES_PENDING: "`check` only: at least one service has an image whose digest moved",
    USAGE: "bad command line, a subcommand without the cli extra installed, or a `rollback` that cannot be "
           "done as asked (nothing to roll back to, no earlier pin, no terminal to confirm on and no --yes)",
    TOOL_MISSING: "a required tool (skopeo, snapper, compose tool) is missing",
    LOCKED: "another cipug run holds the lock",
    FILE_NOT_FOUND: "a file was not found (config file)",
    DIRECTORY_NOT_FOUND: "a directory was not found (SERVICES_ROOT, a service)",
    CONFIG_UNREADABLE: "the config file cannot be read or is not valid JSON",
    CONFIG_NOT_OBJECT: "the config file is not a JSON object",
    WRONG_TYPE: "a setting has a value of the wrong type",
    INVALID_VALUE: "a setting has an invalid value, or is unknown",
    ENV_FILE_INVALID: "a service's .env cannot be parsed",
    COMPOSE_UNUSABLE: "the compose tool does not work in a service folder",
    SNAPSHOT_FAILED: "the snapper snapshot failed (no config for the folder, snapper error)",
    ENV_WRITE_FAILED: "a service's .env could not be written",
    PULL_FAILED: "pulling the new images failed; the old .env was put back",
    RESTART_FAILED: "restarting failed or the service did not come up; the old images were put back",
    RESOLVE_FAILED: "a tag could not be resolved (registry unreachable, unknown tag)",
    SNAPSHOTS_STALE: "snapshots missing or older than their max age",
    INTERRUPTED: "stopped by SIGINT or SIGTERM (a service being changed was put back first)",
    SEVERAL_ERRORS: "several different errors in one run",
}


class CipugError(Exception):
    """An error to report as one line, ending the run (or one service) with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


def combine_codes(codes: list[int]) -> int:
    """The exit code of a run whose services ended with `codes`."""
    failures = {code for code in codes if code != OK}
    if not failures:
        return OK
    if len(failures) == 1:
        return failures.pop()
    return SEVERAL_ERRORS


class Interrupted(CipugError):
    """SIGINT or SIGTERM arrived; raised so a service half-way through an update is put back first."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}", INTERRUPTED)
