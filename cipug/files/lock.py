"""One cipug run at a time on a services root: an exclusive flock on a lock file in it."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from types import TracebackType

from ..errors import CipugError, ExitCode
from ..settings import Settings


class RunLock:
    """Holds the lock `path` for a `with` block; entering fails at once if another process holds it.

    The file is never deleted: a process could lock the old file just before
    another removes it and a third creates a new one, and two runs would go ahead.
    """

    def __init__(self, path: Path, folder_setting: str = "the lock's folder") -> None:
        self.path = path
        # Named in errors: the setting that decides where the lock is.
        self.folder_setting = folder_setting
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        path = self.path
        try:
            # CLOEXEC: compose and podman started during the run must not inherit and keep the lock.
            # NONBLOCK: a FIFO planted there must not hang the run.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except (FileNotFoundError, NotADirectoryError):
            # The folder is never created: a mistyped SERVICES_ROOT must not appear as an empty one.
            raise CipugError(f"{self.folder_setting} {path.parent} is not a directory",
                             ExitCode.DIRECTORY_NOT_FOUND) from None
        except OSError as error:
            # Not LOCKED: a timer treats 11 as "try later", but this will not go away by itself.
            raise CipugError(f"cannot open the lock file {path} (in {self.folder_setting}): {error.strerror}",
                             ExitCode.INVALID_VALUE) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CipugError(f"the lock file {path} is not a regular file; remove it", ExitCode.INVALID_VALUE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            # Closing the only descriptor releases the lock.
            os.close(fd)
            if isinstance(error, BlockingIOError):
                raise CipugError(
                    f"another cipug run holds the lock {path}; try again when it has finished", ExitCode.LOCKED
                ) from None
            raise CipugError(f"cannot lock {path}: {error.strerror}", ExitCode.INVALID_VALUE) from None
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


LOCK_FILE_NAME = ".cipug.lock"


def run_lock(settings: Settings) -> RunLock:
    """The lock of every run that changes services (update, rollback): one at a time per services root.

    It lives in SERVICES_ROOT itself, so runs with different cache and state locations (a timer's,
    a shell's, another user's) still meet it; its leading dot keeps it from being taken for a service.
    """
    return RunLock(settings.services_root / LOCK_FILE_NAME, "SERVICES_ROOT")
