"""The system test tier: cipug under real systemd, in a Debian 12 VM booted with qemu.

One session fixture builds the image (or finds it cached, see build-image.sh), copies
the checkout's cipug package into a job folder and boots the VM once; guest.py runs
every scenario there and writes what it saw back; each test asserts on one scenario's
record. Without qemu, debootstrap or root the tests skip, naming what is missing; with
CI=true they fail instead.

Settings (environment):
  CIPUG_VM_CACHE      image cache (default /var/cache/cipug-tests/vm)
  CIPUG_VM_SOURCE     the cipug package folder to test (default: this checkout's cipug/)
  CIPUG_VM_KEEP       keep the job folder (console log, journal, records) and print its path
  CIPUG_VM_JOB        a kept job folder: assert on its records again, without building or booting
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # vmjob, also under pytest's importlib import mode
import vmjob  # noqa: E402

SYSTEM_DIR = Path(__file__).parent
TOOLS = ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "flock")
TIMES: dict[str, float] = {}
KEPT: list[str] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "system: boots a Debian VM with qemu to run cipug under real systemd")


def pytest_collection_modifyitems(items):
    # Slow and root-only like the integration tests: `-m "not integration"` leaves them out too.
    for item in items:
        if item.path.is_relative_to(SYSTEM_DIR):
            item.add_marker(pytest.mark.system)
            item.add_marker(pytest.mark.integration)


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the system tests fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


class VMRun:
    def __init__(self, job: Path, rc: int):
        self.job, self.rc = job, rc
        self.out = job / "out"

    def text(self, name: str) -> str:
        path = self.out / name
        return path.read_text(errors="replace") if path.exists() else ""

    def scenario(self, name: str) -> dict:
        path = self.out / f"{name}.json"
        if not path.exists():
            setup_error = self.text("setup-error.txt")
            pytest.fail(f"the VM wrote no record for {name} (qemu exit {self.rc}, job exit {self.text('rc').strip()!r})"
                        f"{': set-up failed: ' + setup_error if setup_error else ''}\n"
                        f"run.log tail:\n{self.text('run.log')[-3000:]}\nconsole tail:\n"
                        f"{(self.job / 'console.log').read_text(errors='replace')[-2000:] if (self.job / 'console.log').exists() else ''}",
                        pytrace=False)
        facts = json.loads(path.read_text())
        if "error" in facts:
            pytest.fail(f"scenario {name} raised in the VM:\n{facts['error']}", pytrace=False)
        return facts


@pytest.fixture(scope="session")
def vm():
    if os.environ.get("CIPUG_VM_JOB"):
        # Assert again on a kept job folder, without booting (to work on the assertions).
        job = Path(os.environ["CIPUG_VM_JOB"])
        yield VMRun(job, 0)
        return
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        _unavailable(f"missing {', '.join(missing)} (Debian: apt-get install qemu-system-x86 qemu-utils debootstrap)")
    if os.geteuid() != 0:
        _unavailable("needs root: debootstrap builds the VM image in a chroot")
    source = Path(os.environ.get("CIPUG_VM_SOURCE") or vmjob.REPO / "cipug")
    image, TIMES["image (build or cache)"] = vmjob.build_image()
    TIMES["image build (when built)"] = float((image / "complete").read_text())
    job = Path(tempfile.mkdtemp(prefix="cipug-vm-job-"))
    try:
        vmjob.prepare(job, source)
        rc, TIMES["VM, qemu start to power-off"] = vmjob.boot(image, job)
        times = job / "out" / "times.json"
        if times.exists():
            for name, seconds in json.loads(times.read_text()).items():
                TIMES[f"in VM: {name}"] = seconds
        yield VMRun(job, rc)
    finally:
        if os.environ.get("CIPUG_VM_KEEP"):
            KEPT.append(str(job))
        else:
            shutil.rmtree(job, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if TIMES:
        terminalreporter.section("system tests: seconds")
        for name, seconds in TIMES.items():
            terminalreporter.write_line(f"{name:40} {seconds:7.1f}")
    for job in KEPT:
        terminalreporter.write_line(f"job folder kept (CIPUG_VM_JOB={job} asserts on it again): {job}")
