"""cipug.programs.process: what every external command cipug runs gets, and what it tells the user."""

from __future__ import annotations

import io
import shlex
import sys

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.log import DEBUG, VERBOSE, Log
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
