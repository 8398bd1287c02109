import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cipug.errors import ExitCode
from cipug.errors import CipugError
from cipug.files.lock import RunLock, run_lock
from cipug.settings import load_settings

# Another process tries the lock and reports the exit code it would end with.
TRY_LOCK = """
import sys
from pathlib import Path
from cipug.errors import CipugError
from cipug.files.lock import RunLock
try:
    with RunLock(Path(sys.argv[1])):
        print(0)
except CipugError as error:
    print(error.code)
    print(error.message)
"""


def try_from_another_process(path: Path) -> list[str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    # It must fail at once rather than wait for the lock; the bound is generous for a slow machine.
    assert time.monotonic() - started < 30
    return result.stdout.splitlines()


def test_second_run_fails_at_once_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "cipug.lock"
    with RunLock(path):
        code, message = try_from_another_process(path)
    assert int(code) == ExitCode.LOCKED == 11
    assert message == f"another cipug run holds the lock {path}; try again when it has finished"


def test_second_run_succeeds_after_release(tmp_path: Path) -> None:
    path = tmp_path / "cipug.lock"
    with RunLock(path):
        pass
    assert try_from_another_process(path) == ["0"]
    assert path.exists(), "the lock file is kept: deleting flock files races"


def test_lock_is_released_when_the_run_fails(tmp_path: Path) -> None:
    path = tmp_path / "cipug.lock"
    with pytest.raises(RuntimeError):
        with RunLock(path):
            raise RuntimeError("run failed")
    assert try_from_another_process(path) == ["0"]


def test_lock_is_not_inherited_by_programs_the_run_starts(tmp_path: Path) -> None:
    # A container started during the run may outlive it; it must not keep the lock.
    path = tmp_path / "cipug.lock"
    with RunLock(path):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], close_fds=False)
    try:
        assert try_from_another_process(path) == ["0"]
    finally:
        child.kill()
        child.wait()


def test_missing_folder_is_a_missing_directory_and_not_created(tmp_path: Path) -> None:
    # The folder is SERVICES_ROOT: creating it would make a mistyped root look like an empty one.
    path = tmp_path / "services" / ".cipug.lock"
    with pytest.raises(CipugError) as raised:
        with RunLock(path, "SERVICES_ROOT"):
            pass
    assert raised.value.code == ExitCode.DIRECTORY_NOT_FOUND
    assert raised.value.message == f"SERVICES_ROOT {tmp_path / 'services'} is not a directory"
    assert not path.parent.exists()


def test_new_lock_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / ".cipug.lock"
    with RunLock(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fifo_in_its_place_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / ".cipug.lock"
    os.mkfifo(path)
    with pytest.raises(CipugError) as raised:
        with RunLock(path):
            pass
    assert raised.value.code == ExitCode.INVALID_VALUE and "not a regular file" in raised.value.message


def test_the_run_lock_is_in_the_services_root_whatever_the_cache_location(tmp_path: Path) -> None:
    # A timer (cache in /var/cache/cipug) and a shell (~/.cache/cipug) must meet the same lock.
    root = tmp_path / "services"
    paths = {run_lock(load_settings({"CIPUG_SERVICES_ROOT": str(root), "CIPUG_CACHE_LOCATION": cache},
                                    cwd=tmp_path)).path
             for cache in ("a/cache.json", "b/cache.json")}
    assert paths == {root / ".cipug.lock"}


def test_unusable_lock_location_is_not_reported_as_locked(tmp_path: Path) -> None:
    # A timer may treat 11 as "try later"; a lock that can never be taken needs a different code.
    (tmp_path / "lock").mkdir()
    with pytest.raises(CipugError) as raised:
        with RunLock(tmp_path / "lock"):
            pass
    assert raised.value.code not in (ExitCode.LOCKED, ExitCode.DIRECTORY_NOT_FOUND)
    assert str(tmp_path / "lock") in raised.value.message
