"""cipug.programs.process: what every external command cipug runs gets, and what it tells the user."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cipug.errors import CipugError, ExitCode, Interrupted
from cipug.log import DEBUG, VERBOSE, Log
from cipug.programs import process
from cipug.programs.process import Runner


def runner(verbosity: int) -> tuple[Runner, io.StringIO]:
    out = io.StringIO()
    return Runner(Log(verbosity, out, io.StringIO())), out


def test_every_command_is_logged_with_its_argv_at_verbosity_3(tmp_path):
    loud, out = runner(DEBUG)
    loud.run([sys.executable, "-c", "pass", "two words"], cwd=tmp_path)
    assert out.getvalue() == f"running: {sys.executable} -c pass 'two words' (in {tmp_path})\n"
    quiet, out = runner(VERBOSE)
    quiet.run([sys.executable, "-c", "pass"])
    assert out.getvalue() == ""


def test_programs_run_without_the_systemd_invocation_id(monkeypatch):
    # With it, podman keeps conmon in the calling unit's cgroup: the unit's end would kill the containers.
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    monkeypatch.setenv("CIPUG_PROBE", "kept")
    code = "import os; print(os.environ.get('INVOCATION_ID'), os.environ.get('CIPUG_PROBE'))"
    result = runner(0)[0].run([sys.executable, "-c", code])
    assert result.stdout == "None kept\n"


def test_a_failure_is_one_line_with_the_command_and_its_last_error_line():
    code = "import sys; print('detail', file=sys.stderr); print('the reason', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CipugError) as raised:
        runner(0)[0].output([sys.executable, "-c", code], ExitCode.PULL_FAILED, "web: pull failed")
    assert raised.value.code == ExitCode.PULL_FAILED
    command = shlex.join([sys.executable, "-c", code])
    assert raised.value.message == f"web: pull failed: `{command}` exited 3: the reason"


def test_a_missing_program_is_exit_10(tmp_path):
    with pytest.raises(CipugError) as raised:
        runner(0)[0].run([str(tmp_path / "nosuch")])
    assert raised.value.code == ExitCode.TOOL_MISSING


# A program that starts a grandchild, writes the grandchild's pid to argv[1] and waits for it:
# podman-compose running `podman pull`. argv[2] is the grandchild's shell command.
PARENT = ("import subprocess, sys; child = subprocess.Popen(['/bin/sh', '-c', sys.argv[2]]); "
          "open(sys.argv[1], 'w').write(str(child.pid)); child.wait()")


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not reaped by an init that does not reap) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def grandchild(pid_file: Path) -> int:
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the program did not start its child"
        time.sleep(0.02)
    return int(pid_file.read_text())


@pytest.fixture
def interrupt_after():
    """interrupt_after(seconds): SIGALRM raises Interrupted then, as cipug's SIGTERM handler does."""
    def handler(signal_number, frame):
        raise Interrupted("SIGTERM")

    previous = signal.signal(signal.SIGALRM, handler)
    yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_each_program_runs_in_a_session_of_its_own():
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())"
    assert runner(0)[0].run([sys.executable, "-c", code]).stdout == "True True\n"


def test_a_lookup_thread_program_stays_in_cipugs_group():
    # Only the main thread is interrupted; a worker's program is waited for, and a terminal's Ctrl-C reaches it.
    results = []
    code = "import os; print(os.getpgrp())"
    worker = threading.Thread(target=lambda: results.append(runner(0)[0].run([sys.executable, "-c", code]).stdout))
    worker.start()
    worker.join()
    assert results == [f"{os.getpgrp()}\n"]


def test_a_timeout_ends_the_program_and_what_it_started(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        runner(0)[0].run([sys.executable, "-c", PARENT, str(pid_file), "sleep 60"], timeout=1)
    assert gone_soon(grandchild(pid_file))


def test_an_interrupt_ends_the_group_and_kills_what_ignores_sigterm(tmp_path, monkeypatch, interrupt_after):
    monkeypatch.setattr(process, "GRACE_SECONDS", 0.5)
    pid_file = tmp_path / "pid"
    interrupt_after(1)
    started = time.monotonic()
    with pytest.raises(Interrupted):
        runner(0)[0].run([sys.executable, "-c", PARENT, str(pid_file), "trap '' TERM; sleep 60"])
    pid = grandchild(pid_file)
    assert gone_soon(pid)
    assert time.monotonic() - started >= 1.5  # SIGTERM first, SIGKILL only after the grace


def test_a_daemon_with_a_session_of_its_own_outlives_the_interrupt(tmp_path, interrupt_after):
    # conmon does this, so the containers a cut-short `up -d` started keep running.
    pid_file = tmp_path / "pid"
    interrupt_after(1)
    with pytest.raises(Interrupted):
        runner(0)[0].run([sys.executable, "-c", PARENT, str(pid_file), "exec setsid sleep 60"])
    pid = grandchild(pid_file)
    try:
        time.sleep(0.2)
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
