"""Running external programs: argv lists only, output captured, failures as one line.

shutil and subprocess are imported where they are used: together they cost more start-up time
than the timer's whole run when nothing has to be looked up or changed.
"""

from __future__ import annotations

from . import errors
from .errors import CipugError

# Names only annotations use: collections.abc would import collections on every timer run.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def describe(argv: Sequence[str]) -> str:
    return " ".join(argv)


def missing_tools(commands: Sequence[Sequence[str]]) -> list[str]:
    """The programs (first words) of `commands` that cannot be found on PATH."""
    import shutil

    missing: list[str] = []
    for argv in commands:
        if shutil.which(argv[0]) is None and argv[0] not in missing:
            missing.append(argv[0])
    return missing


def require_tools(commands: Sequence[Sequence[str]]) -> None:
    missing = missing_tools(commands)
    if missing:
        raise CipugError(
            f"required tool not found on PATH: {', '.join(missing)} (PATH is searched; set the *_TOOL settings to a full path)",
            errors.TOOL_MISSING,
        )


def last_line(text: str) -> str:
    """The most telling line of a program's error output, for one-line messages."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def run(argv: Sequence[str], *, cwd: str | None = None, timeout: float | None = None):
    """Run argv; its subprocess.CompletedProcess (text). A program that cannot be started is exit 10,
    and one still running after `timeout` seconds raises subprocess.TimeoutExpired."""
    import subprocess

    try:
        return subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CipugError(f"required tool not found: {argv[0]}", errors.TOOL_MISSING) from None
    except PermissionError:
        raise CipugError(f"tool cannot be run (permission denied): {argv[0]}", errors.TOOL_MISSING) from None


def run_checked(argv: Sequence[str], code: int, what: str, *, cwd: str | None = None,
                timeout: float | None = None) -> str:
    """Run argv; on failure raise CipugError(code) saying `what` failed and why. Returns stdout."""
    import subprocess

    try:
        result = run(argv, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CipugError(f"{what}: `{describe(argv)}` did not finish within {timeout:g} s", code) from None
    if result.returncode != 0:
        raise CipugError(
            f"{what}: `{describe(argv)}` exited {result.returncode}: {last_line(result.stderr or result.stdout)}", code
        )
    return result.stdout
