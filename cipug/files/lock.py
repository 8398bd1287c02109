"""One cipug run at a time: an exclusive flock on a lock file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from ..errors import CipugError, ExitCode
from ..settings import Settings


class RunLock:
    """Holds the lock `path` for a `with` block; entering fails at once if another process holds it.

    The file is never deleted: a process could lock the old file just before
    another removes it and a third creates a new one, and two runs would go ahead.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # CLOEXEC: compose and podman started during the run must not inherit and keep the lock.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            # Not LOCKED: a timer treats 11 as "try later", but this will not go away by itself.
            raise CipugError(
                f"cannot open the lock file {path} (next to CACHE_LOCATION): {error.strerror}", ExitCode.INVALID_VALUE
            ) from None
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


def run_lock(settings: Settings) -> RunLock:
    """The lock of every run that changes services (update, rollback): one at a time."""
    return RunLock(settings.cache_location.parent / "cipug.lock")
