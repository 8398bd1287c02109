"""cipug.files.trusted: what is read from and written to files only cipug may have written."""

from __future__ import annotations

import os

import pytest

from cipug.files.trusted import Untrusted, read_trusted, write_private


def test_a_folder_where_a_file_belongs_is_untrusted_and_left_alone(tmp_path):
    tmp_path.chmod(0o700)
    planted = tmp_path / "cache.json"
    planted.mkdir()
    (planted / "inside").write_text("someone's\n")

    with pytest.raises(Untrusted, match="not a regular file"):
        read_trusted(planted)
    with pytest.raises(Untrusted, match="is a directory"):
        write_private(planted, "{}\n")
    assert (planted / "inside").read_text() == "someone's\n"


def test_a_private_file_reads_back_and_a_missing_one_is_none(tmp_path):
    path = tmp_path / "state" / "state.json"
    assert read_trusted(path) is None
    assert write_private(path, "{}\n") is False
    assert read_trusted(path) == b"{}\n"
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o700
