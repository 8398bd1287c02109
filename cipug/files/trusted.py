"""Files only cipug (the user running it) may have written: the cache and the intent records.

What they hold ends up in services' .env files or decides how a service is repaired, so a file
anyone else could have written or replaced is never trusted: it is refused when read, and
replaced by a private one when written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .atomic import write_atomic


class Untrusted(Exception):
    """Why a file is not read or not written, for one warning line."""


def file_problem(info: os.stat_result) -> str | None:
    """Why a file with this (l)stat must not be trusted, None when it may be."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not {os.geteuid()}"
    if info.st_mode & stat.S_IWOTH:
        return "writable by others"
    if info.st_mode & stat.S_IWGRP:
        return "writable by group"
    return None


def folder_problem(folder: Path) -> str | None:
    """Why a file in `folder` must not be trusted: anyone may replace files there between runs."""
    try:
        info = folder.stat()
    except OSError as error:
        return f"its folder cannot be read: {error.strerror}"
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        return f"its folder {folder} is writable by others without the sticky bit"
    return None


def read_trusted(path: Path) -> bytes | None:
    """The file's bytes, None when it does not exist; Untrusted when it may have been tampered with."""
    try:
        # Checks run on the opened descriptor, so the file cannot be swapped between check and read.
        # NONBLOCK: opening a FIFO planted here must not hang the run.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if path.is_symlink():
            raise Untrusted("is a symlink") from None
        raise Untrusted(f"cannot be read: {error.strerror}") from None
    try:
        # Before fdopen, which refuses a directory.
        problem = file_problem(os.fstat(fd)) or folder_problem(path.parent)
        if problem:
            raise Untrusted(problem)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    except OSError as error:
        raise Untrusted(f"cannot be read: {error.strerror}") from None
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> bool:
    """Write `path` atomically, mode 0600 in a 0700 folder; whether an untrusted file had to be replaced.

    Raises Untrusted when the folder is not safe, OSError or CipugError when writing fails.
    """
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = folder_problem(folder)
    if problem:
        # The next run would refuse the file anyway; and someone else controls what is there.
        raise Untrusted(problem)
    try:
        existing = path.lstat()
    except FileNotFoundError:
        existing = None
    # write_atomic writes through symlinks and keeps an old file's owner and mode: remove a
    # file we would not trust, so that a fresh private one takes its place.
    replaced = existing is not None and file_problem(existing) is not None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        # Not cipug's to remove: someone put a folder where its file belongs.
        raise Untrusted("is a directory")
    if replaced:
        path.unlink()
    write_atomic(path, text, mode=0o600)
    return replaced
