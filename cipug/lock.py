"""One cipug run at a time: an exclusive flock on a file next to the cache."""

from __future__ import annotations

import fcntl
import os

from . import errors
from .errors import CipugError


class RunLock:
    """Holds the lock `path` for a `with` block; entering fails at once if another process holds it.

    The file is never deleted: a process could lock the old file just before
    another removes it and a third creates a new one, and two runs would go ahead.
    A class rather than contextlib.contextmanager, which the timer's run would import only for this.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        path = self.path
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            # CLOEXEC: compose and podman started during the run must not inherit and keep the lock.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            # Not LOCKED: a timer treats 11 as "try later", but this will not go away by itself.
            raise CipugError(
                f"cannot open the lock file {path} (next to CACHE_LOCATION): {error.strerror}", errors.INVALID_VALUE
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            # Closing the only descriptor releases the lock.
            os.close(fd)
            if isinstance(error, BlockingIOError):
                raise CipugError(
                    f"another cipug run holds the lock {path}; try again when it has finished", errors.LOCKED
                ) from None
            raise CipugError(f"cannot lock {path}: {error.strerror}", errors.INVALID_VALUE) from None
        self._fd = fd

    def __exit__(self, *exception: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
