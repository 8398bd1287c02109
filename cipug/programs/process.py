"""Running external programs: argv lists only, output captured, failures as one line."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
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


# How long an ended program's group may take to exit on SIGTERM before it gets SIGKILL.
GRACE_SECONDS = 3.0


def _end(process: subprocess.Popen[str], own_session: bool) -> None:
    """End a program; one with a session of its own with everything it started there (podman-compose's
    `podman pull`): SIGTERM to the group, GRACE_SECONDS to exit, then SIGKILL to what is left."""
    if not own_session or process.pid <= 0:
        # No group of its own; a stand-in Popen (the tests' pytest-subprocess) has pid 0, and killpg(0)
        # would signal cipug's own group.
        process.kill()
        return
    try:
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader, so only members really left keep the group there
            if not _signal_group(process, 0):
                break
            time.sleep(0.05)
    finally:
        # Also reached at once when a second SIGTERM or Ctrl-C cuts the grace short.
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen[str], signal_number: int) -> bool:
    """Send a signal to the process group `process` leads; whether any of it was still there."""
    try:
        os.killpg(process.pid, signal_number)
    except ProcessLookupError:
        return False
    return True


class Runner:
    """Runs programs for one cipug run; every command is logged at VERBOSITY 3."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def run(self, argv: Sequence[str], *, cwd: Path | None = None, timeout: float | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv; its result (text). A program that cannot be started is exit 10, and one still
        running after `timeout` seconds raises subprocess.TimeoutExpired. `input` is written to its
        standard input, which is otherwise /dev/null.

        A program run from the main thread gets a session of its own, so that when the timeout
        expires or cipug is interrupted (SIGTERM, Ctrl-C) the program and every process it started
        are ended before the exception goes on; otherwise a grandchild such as podman-compose's
        `podman pull` would outlive cipug. Daemons that start sessions of their own (conmon, so the
        containers) stay. Only the main thread is interrupted (Python runs signal handlers there):
        a worker thread's program (a lookup) is always waited for, so it stays in cipug's group,
        where a terminal's Ctrl-C or a signal to the group ends it at once.
        """
        self.log.debug(f"running: {describe(argv)}" + (f" (in {cwd})" if cwd else ""))
        own_session = threading.current_thread() is threading.main_thread()
        try:
            process = subprocess.Popen(
                list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE, env=child_environment(),
                start_new_session=own_session,
            )
        except FileNotFoundError:
            raise CipugError(f"required tool not found: {argv[0]}", ExitCode.TOOL_MISSING) from None
        except PermissionError:
            raise CipugError(f"tool cannot be run (permission denied): {argv[0]}", ExitCode.TOOL_MISSING) from None
        with process:
            try:
                stdout, stderr = process.communicate(input, timeout=timeout)
            except BaseException:
                _end(process, own_session)
                raise
        return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)

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
