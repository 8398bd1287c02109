"""The one way tests and benchmarks start cipug as a process: `python -m cipug`, from the repository root."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMAND = (sys.executable, "-m", "cipug")


def run_cipug(args: Sequence[str], env: Mapping[str, str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A whole cipug run with these arguments and this environment; its result, never raising on failure."""
    return subprocess.run([*COMMAND, *args], env=dict(env), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def start_cipug(args: Sequence[str], env: Mapping[str, str], *, new_session: bool = False) -> subprocess.Popen[str]:
    """A cipug run in the background; communicate() to wait for it."""
    return subprocess.Popen([*COMMAND, *args], env=dict(env), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=new_session)
