"""Which folders are services: compose's own file names, and a warning for every folder meant to be one but not."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.log import Log
from cipug.services import select_services
from cipug.settings import COMPOSE_FILE_NAMES, load_settings

TAGGED = "SERVICE_WEB_IMAGE_TAGGED=nginx:latest\n"


def services_in(root: Path, names=(), **settings: str):
    """The services found, and the warnings printed."""
    environ = {"CIPUG_SERVICES_ROOT": str(root), **{f"CIPUG_{key.upper()}": value for key, value in settings.items()}}
    err = io.StringIO()
    found = select_services(load_settings(environ, cwd=root), Log(1, io.StringIO(), err), names)
    return found, err.getvalue()


def folder(root: Path, name: str, env: str | None = TAGGED, *compose_files: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    if env is not None:
        (path / ".env").write_text(env)
    for compose_file in compose_files:
        (path / compose_file).write_text("services: {}\n")
    return path


@pytest.mark.parametrize("name", COMPOSE_FILE_NAMES)
def test_each_of_composes_own_names_makes_a_service(tmp_path, name):
    folder(tmp_path, "web", TAGGED, name)
    [service], warnings = services_in(tmp_path)
    assert service.compose_file == tmp_path / "web" / name
    assert warnings == ""


def test_the_first_name_in_composes_order_wins(tmp_path):
    folder(tmp_path, "web", TAGGED, "docker-compose.yml", "compose.yml", "docker-compose.yaml")
    [service], _ = services_in(tmp_path)
    assert service.compose_file.name == "compose.yml"


def test_a_configured_name_is_the_only_one_looked_for(tmp_path):
    folder(tmp_path, "web", TAGGED, "compose.yaml")
    folder(tmp_path, "db", TAGGED, "stack.yml")
    found, warnings = services_in(tmp_path, compose_file_name="stack.yml")
    assert [service.name for service in found] == ["db"]
    assert warnings == f"cipug: warning: web: not a service, skipped: {tmp_path / 'web' / '.env'} has " \
                       "*_IMAGE_TAGGED entries, but there is no stack.yml\n"


def test_folders_meant_as_services_are_named_in_a_warning(tmp_path):
    folder(tmp_path, "ok", TAGGED, "compose.yml")
    folder(tmp_path, "nocompose", TAGGED)
    os.symlink(tmp_path / "missing.env", folder(tmp_path, "dangling", None, "compose.yml") / ".env")
    (folder(tmp_path, "envdir", None, "compose.yml") / ".env").mkdir()
    folder(tmp_path, "plain", "TZ=UTC\n")  # no images named: not meant as a service
    folder(tmp_path, "empty", None)
    folder(tmp_path, ".hidden", TAGGED)  # folders starting with "." are never services

    found, warnings = services_in(tmp_path)

    assert [service.name for service in found] == ["ok"]
    assert warnings.splitlines() == [
        f"cipug: warning: dangling: not a service, skipped: {tmp_path / 'dangling' / '.env'} is a symlink to "
        f"{tmp_path / 'missing.env'}, which does not exist",
        f"cipug: warning: envdir: not a service, skipped: {tmp_path / 'envdir' / '.env'} is a directory",
        f"cipug: warning: nocompose: not a service, skipped: {tmp_path / 'nocompose' / '.env'} has *_IMAGE_TAGGED "
        "entries, but there is no compose.yaml or compose.yml or docker-compose.yaml or docker-compose.yml",
    ]


def test_folders_the_filters_leave_out_are_not_warned_about(tmp_path):
    folder(tmp_path, "ok", TAGGED, "compose.yml")
    folder(tmp_path, "nocompose", TAGGED)
    assert services_in(tmp_path, services_filter_exclude="nocompose")[1] == ""


def test_an_empty_services_root_is_warned_about(tmp_path):
    found, warnings = services_in(tmp_path)
    assert found == []
    assert warnings == f"cipug: warning: SERVICES_ROOT {tmp_path} holds no service (a folder with .env and a " \
                       "compose file: compose.yaml or compose.yml or docker-compose.yaml or docker-compose.yml)\n"


def test_the_lock_file_in_the_root_is_not_a_service(tmp_path):
    folder(tmp_path, "web", TAGGED, "compose.yml")
    (tmp_path / ".cipug.lock").write_text("")
    assert [service.name for service in services_in(tmp_path)[0]] == ["web"]


@pytest.mark.parametrize("settings, reason", [
    ({"services_filter_exclude": "web"}, "web is excluded by SERVICES_FILTER_EXCLUDE "
                                         "(environment variable CIPUG_SERVICES_FILTER_EXCLUDE); remove it there"),
    ({"services_filter": "db"}, "web is not in SERVICES_FILTER (environment variable CIPUG_SERVICES_FILTER); "
                                "add it there"),
])
def test_asking_for_a_service_the_filters_leave_out_says_which_filter(tmp_path, settings, reason):
    folder(tmp_path, "web", TAGGED, "compose.yml")
    folder(tmp_path, "db", TAGGED, "compose.yml")
    with pytest.raises(CipugError) as raised:
        services_in(tmp_path, ["web"], **settings)
    assert raised.value.code == ExitCode.USAGE and reason in raised.value.message


def test_asking_for_chosen_services_keeps_name_order(tmp_path):
    for name in ("a", "b", "c"):
        folder(tmp_path, name, TAGGED, "compose.yml")
    found, _ = services_in(tmp_path, ["c", "a"])
    assert [service.name for service in found] == ["a", "c"]
