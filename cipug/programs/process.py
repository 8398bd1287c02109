"""Running external programs: argv lists only, output captured, failures as one line."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import CipugError, ExitCode
from ..log import Log


def describe(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def last_line(text: str) -> str:
    """The most telling line of a program's error output, for one-line messages."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def child_environment() -> dict[str, str]:
    """cipug's environment without INVOCATION_ID: with it, podman keeps conmon in the calling
    systemd unit's cgroup, and the containers cipug started die when a oneshot unit's run ends."""
    return {name: value for name, value in os.environ.items() if name != "INVOCATION_ID"}


class Runner:
    """Runs programs for one cipug run; every command is logged at VERBOSITY 3."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def run(self, argv: Sequence[str], *, cwd: Path | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv; its result (text). A program that cannot be started is exit 10, and one still
        running after `timeout` seconds raises subprocess.TimeoutExpired."""
        self.log.debug(f"running: {describe(argv)}" + (f" (in {cwd})" if cwd else ""))
        try:
            return subprocess.run(
                list(argv), cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout,
                check=False, stdin=subprocess.DEVNULL, env=child_environment(),
            )
        except FileNotFoundError:
            raise CipugError(f"required tool not found: {argv[0]}", ExitCode.TOOL_MISSING) from None
        except PermissionError:
            raise CipugError(f"tool cannot be run (permission denied): {argv[0]}", ExitCode.TOOL_MISSING) from None

    def output(self, argv: Sequence[str], code: ExitCode, what: str, *, cwd: Path | None = None,
               timeout: float | None = None) -> str:
        """Run argv; its stdout. On failure raise CipugError(code) saying `what` failed and why."""
        try:
            result = self.run(argv, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CipugError(f"{what}: `{describe(argv)}` did not finish within {timeout:g} s", code) from None
        if result.returncode != 0:
            raise CipugError(
                f"{what}: `{describe(argv)}` exited {result.returncode}: {last_line(result.stderr or result.stdout)}",
                code,
            )
        return result.stdout
