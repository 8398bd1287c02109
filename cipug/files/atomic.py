"""Reading files as lossless text, and replacing them atomically without changing their mode or owner."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from ..errors import CipugError, ExitCode


def read_text(path: Path) -> str:
    """The file as UTF-8 text: undecodable bytes kept as surrogates, line endings as they are. Raises OSError."""
    with open(path, "rb") as file:
        return file.read().decode("utf-8", "surrogateescape")


def write_atomic(path: Path, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace the file `path` with `data`: readers, and a crash, see the old content or the new, never a mix.

    An existing file keeps its permission bits, owner and group; a new one gets `mode`, 0600 unless
    given (.env files hold secrets). A symlink is written through: its target gets the new content
    and the link stays a link. The content becomes a new inode, so hard links to the old one keep
    the old content. `str` data is written as UTF-8, surrogates back as the bytes they stand for.
    Raises CipugError (ENV_WRITE_FAILED) and leaves the old file as it was when anything fails.
    """
    content = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    target = path.resolve()
    temporary: Path | None = None
    try:
        existing = _stat_if_exists(target)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        temporary = Path(name)
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            _set_metadata(file.fileno(), existing, mode)
            os.fsync(file.fileno())
        temporary.replace(target)
        temporary = None
        # The rename itself is only durable once the folder is synced.
        _fsync_folder(target.parent)
    except OSError as error:
        raise CipugError(f"{path} could not be written: {error.strerror or error}", ExitCode.ENV_WRITE_FAILED) from None
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _stat_if_exists(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _set_metadata(fd: int, existing: os.stat_result | None, mode: int | None) -> None:
    """Give the new file the old one's owner, group and mode, or `mode` when there is no old one."""
    if existing is None:
        os.fchmod(fd, 0o600 if mode is None else mode)
        return
    ours = os.fstat(fd)
    if (ours.st_uid, ours.st_gid) != (existing.st_uid, existing.st_gid):
        try:
            os.fchown(fd, existing.st_uid, existing.st_gid)
        except PermissionError:
            # Only root may give a file away; a file of our own may lose a group we cannot set, not its owner.
            if existing.st_uid != ours.st_uid:
                raise PermissionError(errno.EPERM, f"cannot keep its owner {existing.st_uid}:{existing.st_gid}"
                                      ) from None
    # After the chown, which clears the set-user-ID and set-group-ID bits.
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
