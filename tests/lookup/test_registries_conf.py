"""registries.conf as skopeo 1.9 reads it: which references it could answer differently for."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from cipug.lookup import registries_conf
from cipug.lookup.references import parse_reference
from cipug.lookup.registries_conf import config_files, load_registries_conf


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's /etc/containers, moved into tmp_path."""
    etc = tmp_path / "etc"
    (etc / "registries.conf.d").mkdir(parents=True)
    monkeypatch.setattr(registries_conf, "SYSTEM_FILE", etc / "registries.conf")
    monkeypatch.setattr(registries_conf, "SYSTEM_DIR", etc / "registries.conf.d")
    return etc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def reason(text: str, reference: str, system: Path, home: Path) -> str | None:
    (system / "registries.conf").write_text(text)
    conf = load_registries_conf(("skopeo",), {"HOME": str(home)})
    return conf.reason(parse_reference(reference), reference)


@pytest.mark.parametrize("text, reference, expected", [
    ('[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "mirror.example"\n',
     "nginx:1.25", "configures the mirror mirror.example for docker.io"),
    ('[[registry]]\nprefix = "docker.io/library"\nlocation = "hub.example/library"\n',
     "docker.io/library/nginx", "rewrites docker.io/library to hub.example/library"),
    ('[[registry]]\nlocation = "ghcr.io"\nblocked = true\n', "ghcr.io/org/app:1", "blocks ghcr.io"),
    ('[registries.block]\nregistries = ["quay.io"]\n', "quay.io/org/app", "blocks quay.io ([registries.block])"),
    ('[[registry]]\nprefix = "*.example.com"\nlocation = "*.example.com"\nblocked = true\n',
     "registry.example.com:5000/app", "blocks *.example.com"),
    ('[aliases]\n"centos" = "quay.io/centos/centos"\n', "centos:9",
     "the short name centos is an alias of quay.io/centos/centos"),
    ('unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]\n', "org/app",
     "the short name org/app would be searched for in registry.fedoraproject.org, docker.io"),
])
def test_what_makes_skopeo_answer(system, home, text, reference, expected):
    found = reason(text, reference, system, home)
    assert found is not None and expected in found and str(system / "registries.conf") in found


@pytest.mark.parametrize("text, reference", [
    # Marking a registry insecure changes how it is reached, not what it answers.
    ('[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n', "127.0.0.1:5000/app"),
    # A mirror for digests only is not asked for a tag.
    ('[[registry]]\nlocation = "docker.io"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m.example"\n',
     "nginx"),
    ('[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "m.example"\npull-from-mirror = "digest-only"\n',
     "nginx"),
    # Another registry's mirror, and a prefix that only looks alike.
    ('[[registry]]\nlocation = "quay.io"\n[[registry.mirror]]\nlocation = "m.example"\n', "nginx"),
    ('[[registry]]\nprefix = "docker.io/library/ngin"\nlocation = "x.example/n"\n', "nginx"),
    # A longer prefix without a mirror wins over a shorter one with one.
    ('[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "m.example"\n'
     '[[registry]]\nprefix = "docker.io/library/nginx"\nlocation = "docker.io/library/nginx"\n', "nginx"),
    # Aliases and search lists that name docker.io's repository anyway (Debian's shortnames.conf), or
    # references that are not short names.
    ('[aliases]\n"alpine" = "docker.io/library/alpine"\n', "alpine:3"),
    ('[aliases]\n"centos" = "quay.io/centos/centos"\n', "docker.io/library/centos"),
    ('unqualified-search-registries = ["docker.io"]\n', "org/app"),
    ('unqualified-search-registries = ["quay.io"]\n', "ghcr.io/org/app"),
])
def test_what_does_not(system, home, text, reference):
    assert reason(text, reference, system, home) is None


def test_drop_ins_override_by_prefix_in_name_order(system, home):
    (system / "registries.conf").write_text('[[registry]]\nlocation = "ghcr.io"\nblocked = true\n')
    (system / "registries.conf.d" / "10-unblock.conf").write_text('[[registry]]\nlocation = "ghcr.io"\n')
    (system / "registries.conf.d" / "20-mirror.conf").write_text(
        '[[registry]]\nlocation = "quay.io"\n[[registry.mirror]]\nlocation = "m.example"\n')
    (system / "registries.conf.d" / "ignored.txt").write_text("not toml at all [")
    conf = load_registries_conf(("skopeo",), {"HOME": str(home)})
    assert conf.reason(parse_reference("ghcr.io/a/b"), "ghcr.io/a/b") is None
    assert "20-mirror.conf configures the mirror" in conf.reason(parse_reference("quay.io/a/b"), "quay.io/a/b")


def test_which_files_skopeo_reads(system, home, tmp_path):
    user_dir = home / ".config/containers/registries.conf.d"
    user_dir.mkdir(parents=True)
    (system / "registries.conf").write_text("")
    (system / "registries.conf.d" / "a.conf").write_text("")
    (user_dir / "b.conf").write_text("")
    flag = tmp_path / "flag.conf"
    flag.write_text("")
    environ = {"HOME": str(home), "CONTAINERS_REGISTRIES_CONF": str(tmp_path / "podman-only.conf")}
    assert config_files(("skopeo",), environ) == [
        system / "registries.conf", system / "registries.conf.d/a.conf", user_dir / "b.conf"]
    # --registries-conf replaces the main file only; CONTAINERS_REGISTRIES_CONF is podman's, not skopeo's.
    assert config_files(("skopeo", "--registries-conf", str(flag)), environ) == [
        flag, system / "registries.conf.d/a.conf", user_dir / "b.conf"]
    assert config_files(("skopeo", f"--registries-conf={flag}"), environ)[0] == flag
    # A per-user registries.conf replaces the system's file and folder.
    (home / ".config/containers/registries.conf").write_text("")
    assert config_files(("skopeo",), environ) == [home / ".config/containers/registries.conf", user_dir / "b.conf"]


def test_no_files_no_reason(system, home):
    conf = load_registries_conf(("skopeo",), {"HOME": str(home)})
    assert conf.files == () and conf.reason(parse_reference("nginx"), "nginx") is None


@pytest.mark.parametrize("text, problem", [
    ("[[registry]\nlocation = 1", "is not valid TOML"),
    ('registry = "docker.io"\n', "has a `registry` that is not an array of tables"),
    ("unqualified-search-registries = 5\n", "not a list of strings"),
])
def test_a_file_that_cannot_be_read_means_cannot_tell(system, home, text, problem):
    found = reason(text, "ghcr.io/org/app", system, home)
    assert found is not None and problem in found and "cannot tell" in found


def test_python_3_10_cannot_read_toml_so_cannot_tell(system, home, monkeypatch):
    monkeypatch.setattr(registries_conf, "sys", types.SimpleNamespace(version_info=(3, 10, 13)))
    found = reason('[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n', "127.0.0.1:5000/app", system, home)
    assert found is not None and "Python 3.10 cannot read TOML" in found and str(system / "registries.conf") in found
    (system / "registries.conf").unlink()
    assert load_registries_conf(("skopeo",), {"HOME": str(home)}).reason(parse_reference("nginx"), "nginx") is None
