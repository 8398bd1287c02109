"""cipug.files.atomic: atomic replacement that keeps mode, owner and the old file when anything fails."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cipug.errors import ExitCode
from cipug.files import atomic as atomicfile
from cipug.files.atomic import read_text, write_atomic
from cipug.errors import CipugError

OLD = b"# old\r\nSERVICE_X_IMAGE_TAGGED=x:1\r\n"
NEW = "# new\nSERVICE_X_IMAGE_HASHED=docker.io/library/x@sha256:" + "a" * 64 + "\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_file(folder: Path, mode: int = 0o640) -> Path:
    path = folder / ".env"
    path.write_bytes(OLD)
    path.chmod(mode)
    return path


def fail(*args: object, **kwargs: object) -> None:
    raise OSError("disk on fire")


def refuse(*args: object) -> None:
    raise PermissionError(errno.EPERM, "Operation not permitted")


def read_text_of(data: bytes, folder: Path) -> str:
    source = folder / "source"
    source.write_bytes(data)
    return read_text(source)


def test_read_text_keeps_line_endings_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=caf\xc3\xa9\r\nB=\xff\xfe\rC\n")
    assert read_text(path) == "A=caf\u00e9\r\nB=\udcff\udcfe\rC\n"


def test_read_text_of_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "missing.env")


def test_writes_the_content_and_keeps_the_mode(tmp_path: Path) -> None:
    path = make_file(tmp_path, 0o640)
    write_atomic(path, NEW)
    assert path.read_bytes() == NEW.encode()
    assert mode_of(path) == 0o640


def test_str_with_surrogates_writes_the_original_bytes_back(tmp_path: Path) -> None:
    original = b"A=\xff\xfe\r\nB=caf\xc3\xa9"
    path = tmp_path / ".env"
    path.write_bytes(b"")
    write_atomic(path, read_text_of(original, tmp_path))
    assert path.read_bytes() == original


def test_bytes_are_written_as_they_are(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    write_atomic(path, b"\x00\xff\r\n")
    assert path.read_bytes() == b"\x00\xff\r\n"


def test_a_new_file_gets_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o000)
    try:
        write_atomic(tmp_path / "new.env", NEW)
    finally:
        os.umask(old_umask)
    assert mode_of(tmp_path / "new.env") == 0o600
    assert (tmp_path / "new.env").read_text() == NEW


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    write_atomic(tmp_path / "cache.json", "{}", mode=0o644)
    assert mode_of(tmp_path / "cache.json") == 0o644


def test_an_existing_file_keeps_its_mode_even_when_a_mode_is_given(tmp_path: Path) -> None:
    path = make_file(tmp_path, 0o604)
    write_atomic(path, NEW, mode=0o600)
    assert mode_of(path) == 0o604


@needs_root
def test_owner_group_and_setid_bits_are_kept(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    os.chown(path, 1234, 2345)
    # chown clears set-ID bits, so they survive only if the mode is set after the owner.
    path.chmod(0o6750)
    write_atomic(path, NEW)
    info = path.stat()
    assert (info.st_uid, info.st_gid) == (1234, 2345)
    assert stat.S_IMODE(info.st_mode) == 0o6750
    assert path.read_text() == NEW


@needs_root
def test_a_group_we_may_not_set_is_given_up_on_our_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_file(tmp_path)
    os.chown(path, os.geteuid(), 2345)
    # As a user who is not in group 2345 would be refused.
    monkeypatch.setattr(atomicfile.os, "fchown", refuse)
    write_atomic(path, NEW)
    assert path.read_text() == NEW
    assert (path.stat().st_uid, path.stat().st_gid) == (os.geteuid(), os.getegid())


@needs_root
def test_a_file_of_another_owner_that_we_cannot_keep_is_not_replaced(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_file(tmp_path)
    os.chown(path, 1234, 1234)
    # As a user who is not root would be refused.
    monkeypatch.setattr(atomicfile.os, "fchown", refuse)
    with pytest.raises(CipugError) as caught:
        write_atomic(path, NEW)
    assert caught.value.code == ExitCode.ENV_WRITE_FAILED
    assert caught.value.message == f"{path} could not be written: cannot keep its owner 1234:1234"
    assert path.read_bytes() == OLD
    assert sorted(os.listdir(tmp_path)) == [".env"]


@pytest.mark.parametrize("function", ["replace", "fsync", "fchmod"])
def test_a_failure_leaves_the_old_file_and_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             function: str) -> None:
    path = make_file(tmp_path)
    monkeypatch.setattr(atomicfile.os, function, fail)
    with pytest.raises(CipugError) as caught:
        write_atomic(path, NEW)
    assert caught.value.code == ExitCode.ENV_WRITE_FAILED == 32
    assert caught.value.message == f"{path} could not be written: disk on fire"
    assert path.read_bytes() == OLD
    assert mode_of(path) == 0o640
    assert sorted(os.listdir(tmp_path)) == [".env"]


def test_a_folder_where_no_file_can_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-folder" / ".env"
    with pytest.raises(CipugError) as caught:
        write_atomic(path, NEW)
    assert caught.value.code == ExitCode.ENV_WRITE_FAILED
    assert caught.value.message == f"{path} could not be written: No such file or directory"


def test_a_folder_in_the_way_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(CipugError) as caught:
        write_atomic(tmp_path / ".env", NEW)
    assert caught.value.message.startswith(f"{tmp_path / '.env'} could not be written: ")
    assert "\n" not in caught.value.message
    assert (tmp_path / ".env").is_dir()
    assert sorted(os.listdir(tmp_path)) == [".env"]


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real_folder = tmp_path / "real"
    real_folder.mkdir()
    target = make_file(real_folder, 0o640)
    service = tmp_path / "service"
    service.mkdir()
    link = service / ".env"
    link.symlink_to(Path("..") / "real" / ".env")

    write_atomic(link, NEW)

    assert link.is_symlink()
    assert os.readlink(link) == os.path.join("..", "real", ".env")
    assert target.read_text() == NEW
    assert mode_of(target) == 0o640
    assert sorted(os.listdir(service)) == [".env"]
    assert sorted(os.listdir(real_folder)) == [".env"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / ".env"
    link.symlink_to("stored.env")
    write_atomic(link, NEW)
    assert link.is_symlink()
    assert (tmp_path / "stored.env").read_text() == NEW
    assert mode_of(tmp_path / "stored.env") == 0o600


def test_a_replaced_file_is_a_new_inode_so_readers_of_the_old_one_see_it_whole(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    with path.open("rb") as reader:
        write_atomic(path, NEW)
        assert reader.read() == OLD
    assert path.read_text() == NEW
