import io
import json
import os
import stat
from pathlib import Path

import pytest

from cipug.lookup.cache import ResolutionCache
from cipug.lookup.references import Resolution
from cipug.log import VERBOSE, Log

NOW = 1_750_000_000.0
HOUR = 3600
DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
NEXTCLOUD = Resolution("docker.io/library/nextcloud", DIGEST)


class Captured:
    def __init__(self, verbosity: int = VERBOSE) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.log = Log(verbosity, self.out, self.err)

    def warnings(self) -> list[str]:
        return [line for line in self.err.getvalue().splitlines() if "warning" in line]


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    return folder / "cache.json"


def write_cache(path: Path, document: object, mode: int = 0o600) -> None:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    path.chmod(mode)


def entry(resolved_at: float, name: str = "docker.io/library/nextcloud", digest: str = DIGEST) -> dict:
    return {"name": name, "digest": digest, "resolved_at": resolved_at}


def load(path: Path, captured: Captured, duration: int = HOUR, now: float = NOW) -> ResolutionCache:
    return ResolutionCache.load(path, duration, captured.log, now)


# --- expiry --------------------------------------------------------------------------------------


def test_fresh_entry_is_used(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW - 10)})
    captured = Captured()
    assert load(cache_path, captured).get("nextcloud:latest") == NEXTCLOUD
    assert captured.warnings() == []


def test_old_entry_is_ignored(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW - 2 * HOUR)})
    assert load(cache_path, Captured()).get("nextcloud:latest") is None


def test_entry_exactly_duration_old_has_expired(cache_path: Path) -> None:
    write_cache(cache_path, {"just-in:1": entry(NOW - HOUR + 1), "at-boundary:1": entry(NOW - HOUR)})
    cache = load(cache_path, Captured())
    assert cache.get("just-in:1") == NEXTCLOUD
    assert cache.get("at-boundary:1") is None


def test_entry_from_the_future_is_not_trusted(cache_path: Path) -> None:
    # Written while the clock was ahead: it must not outlive the cache duration by that much.
    write_cache(cache_path, {"nextcloud:latest": entry(NOW + 30 * 24 * HOUR)})
    assert load(cache_path, Captured()).get("nextcloud:latest") is None


def test_unknown_reference_misses(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW)})
    assert load(cache_path, Captured()).get("redis:7") is None


def test_missing_file_is_an_empty_cache_without_warning(cache_path: Path) -> None:
    captured = Captured()
    assert load(cache_path, captured).get("nextcloud:latest") is None
    assert captured.err.getvalue() == ""


# --- untrusted files -----------------------------------------------------------------------------


def assert_ignored(path: Path, reason: str) -> None:
    captured = Captured()
    cache = load(path, captured)
    assert cache.get("nextcloud:latest") is None
    assert captured.warnings() == [f"cipug: warning: ignoring cache {path}: {reason}"]


@pytest.mark.parametrize(
    ("mode", "reason"), [(0o666, "writable by others"), (0o602, "writable by others"), (0o620, "writable by group")]
)
def test_file_writable_by_others_is_ignored(cache_path: Path, mode: int, reason: str) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW)}, mode=mode)
    assert_ignored(cache_path, reason)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_file_owned_by_another_user_is_ignored(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW)})
    os.chown(cache_path, 4321, 4321)
    assert_ignored(cache_path, f"owned by uid 4321, not {os.geteuid()}")


def test_symlink_is_ignored(cache_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    write_cache(target, {"nextcloud:latest": entry(NOW)})
    cache_path.symlink_to(target)
    assert_ignored(cache_path, "is a symlink")


def test_file_in_folder_writable_by_others_is_ignored(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW)})
    cache_path.parent.chmod(0o777)
    assert_ignored(cache_path, f"its folder {cache_path.parent} is writable by others without the sticky bit")


def test_file_in_sticky_folder_writable_by_others_is_used(cache_path: Path) -> None:
    # Like /tmp: others cannot replace a file they do not own there.
    write_cache(cache_path, {"nextcloud:latest": entry(NOW)})
    cache_path.parent.chmod(0o777 | stat.S_ISVTX)
    assert load(cache_path, Captured()).get("nextcloud:latest") == NEXTCLOUD


def test_fifo_is_ignored_without_hanging(cache_path: Path) -> None:
    os.mkfifo(cache_path, 0o600)
    assert_ignored(cache_path, "is not a regular file")


# --- malformed files ---------------------------------------------------------------------------


def test_corrupt_json_is_ignored(cache_path: Path) -> None:
    write_cache(cache_path, '{"nextcloud:latest": {"name": ')
    captured = Captured()
    assert load(cache_path, captured).get("nextcloud:latest") is None
    [warning] = captured.warnings()
    assert warning.startswith(f"cipug: warning: ignoring cache {cache_path}: not valid JSON: ")


def test_binary_garbage_is_ignored(cache_path: Path) -> None:
    cache_path.write_bytes(b"\xff\xfe\x00garbage")
    cache_path.chmod(0o600)
    assert_ignored(cache_path, "not valid JSON (not UTF-8)")


@pytest.mark.parametrize(
    "document",
    [
        [],
        "just a string",
        {"nextcloud:latest": "sha256:" + "a" * 64},
        {"nextcloud:latest": {"digest": DIGEST, "resolved_at": NOW}},
        {"nextcloud:latest": {"name": 7, "digest": DIGEST, "resolved_at": NOW}},
        {"nextcloud:latest": {"name": "n", "digest": None, "resolved_at": NOW}},
        {"nextcloud:latest": {"name": "n", "digest": DIGEST, "resolved_at": "yesterday"}},
        {"nextcloud:latest": {"name": "n", "digest": DIGEST, "resolved_at": True}},
        {"nextcloud:latest": {"name": "n", "digest": DIGEST}},
    ],
)
def test_wrong_shape_ignores_the_whole_file_with_one_warning(cache_path: Path, document: object) -> None:
    # Alongside a good entry, which is not used either: the file was not written by cipug.
    if isinstance(document, dict):
        document = {"good:1": entry(NOW), **document}
    write_cache(cache_path, json.dumps(document))
    captured = Captured()
    cache = load(cache_path, captured)
    assert cache.get("good:1") is None
    assert cache.get("nextcloud:latest") is None
    [warning] = captured.warnings()
    assert warning.startswith(f"cipug: warning: ignoring cache {cache_path}: ")


@pytest.mark.parametrize(
    "bad",
    [
        entry(NOW, digest="sha256:" + "A" * 64),
        entry(NOW, digest="sha256:abc"),
        entry(NOW, digest="md5:" + "a" * 32),
        entry(NOW, digest=DIGEST + "\n"),
        entry(NOW, name=""),
    ],
)
def test_invalid_entry_is_dropped_alone(cache_path: Path, bad: dict) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW), "bad:1": bad})
    captured = Captured()
    cache = load(cache_path, captured)
    assert cache.get("bad:1") is None
    assert cache.get("nextcloud:latest") == NEXTCLOUD
    assert captured.warnings() == []
    # And it is not written back.
    cache.put("redis:7", Resolution("docker.io/library/redis", OTHER_DIGEST))
    cache.save()
    assert set(json.loads(cache_path.read_text())) == {"nextcloud:latest", "redis:7"}


# --- put and save ------------------------------------------------------------------------------


def test_save_round_trip(cache_path: Path) -> None:
    cache = load(cache_path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.put("redis:7", Resolution("docker.io/library/redis", OTHER_DIGEST))
    cache.save()
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    assert json.loads(cache_path.read_text()) == {
        "nextcloud:latest": entry(NOW),
        "redis:7": entry(NOW, name="docker.io/library/redis", digest=OTHER_DIGEST),
    }
    later = load(cache_path, Captured(), now=NOW + 60)
    assert later.get("nextcloud:latest") == NEXTCLOUD
    assert later.get("redis:7") == Resolution("docker.io/library/redis", OTHER_DIGEST)


def test_put_is_visible_to_get_in_the_same_run(cache_path: Path) -> None:
    cache = load(cache_path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    assert cache.get("nextcloud:latest") == NEXTCLOUD


def test_save_creates_the_folder_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cipug" / "cache.json"
    cache = load(path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_replaces_an_untrusted_file_with_a_private_one(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW, digest=OTHER_DIGEST)}, mode=0o666)
    cache = load(cache_path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    assert load(cache_path, Captured()).get("nextcloud:latest") == NEXTCLOUD


def test_save_replaces_a_symlink_instead_of_writing_through_it(cache_path: Path, tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:\n")
    cache_path.symlink_to(victim)
    cache = load(cache_path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    assert victim.read_text() == "root:x:0:\n"
    assert not cache_path.is_symlink()
    assert load(cache_path, Captured()).get("nextcloud:latest") == NEXTCLOUD


def test_save_refuses_a_folder_writable_by_others(cache_path: Path) -> None:
    cache_path.parent.chmod(0o777)
    captured = Captured()
    cache = load(cache_path, captured)
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    assert not cache_path.exists()
    assert captured.warnings() == [
        f"cipug: warning: cannot write cache {cache_path}: "
        f"its folder {cache_path.parent} is writable by others without the sticky bit"
    ]


def test_save_into_a_sticky_folder(cache_path: Path) -> None:
    cache_path.parent.chmod(0o777 | stat.S_ISVTX)
    cache = load(cache_path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    assert load(cache_path, Captured()).get("nextcloud:latest") == NEXTCLOUD


def test_expired_entries_are_not_written_back(cache_path: Path) -> None:
    write_cache(cache_path, {"old:1": entry(NOW - 2 * HOUR), "kept:1": entry(NOW - 60)})
    cache = load(cache_path, Captured())
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    assert json.loads(cache_path.read_text()) == {"kept:1": entry(NOW - 60), "nextcloud:latest": entry(NOW)}


def test_save_without_put_writes_nothing(cache_path: Path) -> None:
    write_cache(cache_path, {"nextcloud:latest": entry(NOW - 10), "old:1": entry(NOW - 2 * HOUR)})
    os.utime(cache_path, (NOW - 100, NOW - 100))
    before = cache_path.read_bytes()
    cache = load(cache_path, Captured())
    cache.get("nextcloud:latest")
    cache.save()
    assert cache_path.stat().st_mtime == NOW - 100
    assert cache_path.read_bytes() == before


def test_save_without_put_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "cipug" / "cache.json"
    load(path, Captured()).save()
    assert not path.parent.exists()


def test_duration_zero_reads_and_writes_nothing(tmp_path: Path, cache_path: Path) -> None:
    # Even an unsafe file is not looked at, so there is no warning either.
    write_cache(cache_path, {"nextcloud:latest": entry(NOW)}, mode=0o666)
    captured = Captured()
    cache = load(cache_path, captured, duration=0)
    assert cache.get("nextcloud:latest") is None
    cache.put("redis:7", Resolution("docker.io/library/redis", OTHER_DIGEST))
    assert cache.get("redis:7") is None
    cache.save()
    assert json.loads(cache_path.read_text()) == {"nextcloud:latest": entry(NOW)}
    assert captured.err.getvalue() == ""

    missing = tmp_path / "nothing" / "cache.json"
    cache = load(missing, captured, duration=0)
    cache.put("redis:7", Resolution("docker.io/library/redis", OTHER_DIGEST))
    cache.save()
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "resolution",
    [
        Resolution("docker.io/library/nextcloud", "sha256:abc"),
        Resolution("docker.io/library/nextcloud", ""),
        Resolution("", DIGEST),
    ],
)
def test_put_refuses_invalid_resolutions(cache_path: Path, resolution: Resolution) -> None:
    cache = load(cache_path, Captured())
    with pytest.raises(ValueError):
        cache.put("nextcloud:latest", resolution)
    cache.save()
    assert not cache_path.exists()


def test_unwritable_cache_is_a_warning_not_an_error(tmp_path: Path) -> None:
    # A file where the folder should be: the folder cannot be created, even by root.
    (tmp_path / "blocked").write_text("")
    path = tmp_path / "blocked" / "cache.json"
    captured = Captured()
    cache = load(path, captured)
    cache.put("nextcloud:latest", NEXTCLOUD)
    cache.save()
    [warning] = captured.warnings()
    assert warning.startswith("cipug: warning: cannot write cache") and str(path) in warning
