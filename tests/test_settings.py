import dataclasses
import json
import os
from pathlib import Path

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.settings import SETTINGS, SETTINGS_BY_NAME, Settings, load_settings

BASE = {"CIPUG_SERVICES_ROOT": "/srv/services", "HOME": "/home/someone"}


def load(tmp_path: Path, env: dict[str, str] | None = None, file: object = None) -> Settings:
    environ = dict(BASE if env is None else env)
    if file is not None:
        path = tmp_path / "cipug.json"
        path.write_text(file if isinstance(file, str) else json.dumps(file))
        environ["CIPUG_CONFIG_FILE"] = str(path)
    return load_settings(environ, cwd=tmp_path)


def error_of(tmp_path: Path, env: dict[str, str] | None = None, file: object = None) -> CipugError:
    with pytest.raises(CipugError) as caught:
        load(tmp_path, env, file)
    return caught.value


@pytest.fixture
def euid(monkeypatch):
    """euid(n): run as user n, as far as the settings' defaults can tell."""
    return lambda uid: monkeypatch.setattr(os, "geteuid", lambda: uid)


def test_defaults_match_the_documented_table(tmp_path, euid):
    euid(1000)
    settings = load(tmp_path)
    assert settings.compose_file_name == ""
    assert settings.env_file_name == ".env"
    assert settings.compose_tool == ("podman-compose",)
    assert settings.container_tool == ("podman",)
    assert settings.service_stop_start is True
    assert settings.stop_start_method == "compose"
    assert settings.service_snapshot is True and settings.service_pull is True and settings.prune_images is True
    assert settings.verbosity == 1
    assert settings.cache_duration == 3600
    assert settings.snapshots_max_age_snapper == 1.5 and settings.snapshots_max_age_btrbk == 36
    assert settings.resolve_workers == 8
    assert settings.services_filter == () and settings.services_filter_exclude == ()
    assert settings.cache_location == Path("/home/someone/.cache/cipug/cache.json")
    assert settings.history_file == Path("/home/someone/.local/state/cipug/history.jsonl")


def test_every_setting_has_a_field_of_its_name_in_lowercase_in_table_order():
    names = [field.name for field in dataclasses.fields(Settings) if field.name != "sources"]
    assert names == [setting.name.lower() for setting in SETTINGS]
    assert list(SETTINGS_BY_NAME) == [setting.name for setting in SETTINGS]


def test_paths_are_absolute_pathlib_paths(tmp_path):
    settings = load(tmp_path)
    for path in (settings.services_root, settings.cache_location, settings.history_file):
        assert isinstance(path, Path) and path.is_absolute()


@pytest.mark.parametrize("uid", [0, 1000])
def test_systemd_and_xdg_directories_place_cache_and_history(tmp_path, euid, uid):
    euid(uid)
    settings = load(tmp_path, {**BASE, "CACHE_DIRECTORY": "/c/cipug:/other", "STATE_DIRECTORY": "/s/cipug"})
    assert settings.cache_location == Path("/c/cipug/cache.json")
    assert settings.history_file == Path("/s/cipug/history.jsonl")
    euid(1000)
    settings = load(tmp_path, {**BASE, "XDG_CACHE_HOME": "/x/cache", "XDG_STATE_HOME": "/x/state"})
    assert settings.cache_location == Path("/x/cache/cipug/cache.json")
    assert settings.history_file == Path("/x/state/cipug/history.jsonl")


def test_root_without_systemd_directories_uses_the_system_folders_whatever_xdg_says(tmp_path, euid):
    # A root shell and the timer (StateDirectory=/CacheDirectory=cipug) must share one history.
    euid(0)
    for env in (BASE, {**BASE, "XDG_CACHE_HOME": "/x/cache", "XDG_STATE_HOME": "/x/state"}):
        settings = load(tmp_path, env)
        assert settings.cache_location == Path("/var/cache/cipug/cache.json")
        assert settings.history_file == Path("/var/lib/cipug/history.jsonl")


@pytest.mark.parametrize("value, expected", [("", ""), ("docker-compose.yml", "docker-compose.yml")])
def test_compose_file_name_may_be_empty_for_composes_own_names(tmp_path, value, expected):
    assert load(tmp_path, {**BASE, "CIPUG_COMPOSE_FILE_NAME": value}).compose_file_name == expected


def test_compose_file_name_with_a_slash_says_empty_is_accepted_too(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_COMPOSE_FILE_NAME": "a/compose.yml"})
    assert error.code == ExitCode.INVALID_VALUE and "a plain file name without '/', or empty" in error.message


def test_environment_wins_over_file_and_file_over_default(tmp_path):
    settings = load(tmp_path, {**BASE, "CIPUG_VERBOSITY": "3"},
                    {"VERBOSITY": 0, "CACHE_DURATION": 60, "SERVICES_ROOT": "/from/file"})
    assert settings.verbosity == 3
    assert settings.cache_duration == 60
    assert settings.services_root == Path("/srv/services")
    assert settings.sources["VERBOSITY"] == "environment variable CIPUG_VERBOSITY"
    assert settings.sources["CACHE_DURATION"] == f"setting CACHE_DURATION in {tmp_path / 'cipug.json'}"
    assert settings.sources["PRUNE_IMAGES"] == "default"


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path):
    settings = load(tmp_path, {"HOME": "/h"}, {"SERVICES_ROOT": "services"})
    assert settings.services_root == tmp_path / "services"


def test_a_tilde_in_a_path_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load(tmp_path, {"HOME": "/h", "CIPUG_SERVICES_ROOT": "~/services"})
    assert settings.services_root == tmp_path / "home" / "services"


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("TRUE", True), ("1", True), ("Yes", True),
    ("false", False), ("False", False), ("0", False), ("NO", False),
])
def test_booleans_accept_every_documented_spelling(tmp_path, text, expected):
    assert load(tmp_path, {**BASE, "CIPUG_SERVICE_PULL": text}).service_pull is expected


def test_json_booleans_and_strings_in_the_file(tmp_path):
    assert load(tmp_path, file={"PRUNE_IMAGES": False}).prune_images is False
    assert load(tmp_path, file={"PRUNE_IMAGES": "yes"}).prune_images is True


def test_bad_boolean_names_setting_value_and_what_is_accepted(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_SERVICE_PULL": "maybe"})
    assert error.code == ExitCode.WRONG_TYPE
    assert "CIPUG_SERVICE_PULL" in error.message and '"maybe"' in error.message
    assert "true/false, 1/0 or yes/no" in error.message


def test_wrong_type_in_file_is_24_and_out_of_range_is_25(tmp_path):
    assert error_of(tmp_path, file={"VERBOSITY": "loud"}).code == ExitCode.WRONG_TYPE
    assert error_of(tmp_path, file={"VERBOSITY": True}).code == ExitCode.WRONG_TYPE
    assert error_of(tmp_path, file={"CACHE_DURATION": 1.5}).code == ExitCode.WRONG_TYPE
    error = error_of(tmp_path, file={"VERBOSITY": 7})
    assert error.code == ExitCode.INVALID_VALUE and "from 0 to 3" in error.message
    assert error_of(tmp_path, {**BASE, "CIPUG_STOP_START_METHOD": "reboot"}).code == ExitCode.INVALID_VALUE


def test_error_messages_are_unchanged(tmp_path):
    assert error_of(tmp_path, file={"VERBOSITY": 7}).message == (
        f"setting VERBOSITY in {tmp_path / 'cipug.json'} = 7 is not valid; expected a whole number from 0 to 3")
    assert error_of(tmp_path, {**BASE, "CIPUG_RESOLVER": "dns"}).message == (
        'environment variable CIPUG_RESOLVER = "dns" is not valid; expected one of skopeo, registry')
    assert error_of(tmp_path, {**BASE, "CIPUG_STOP_START_METHOD": "reboot"}).message.endswith(
        "expected one of compose, systemd-system, systemd-user")


def test_unknown_setting_in_file_lists_known_ones(tmp_path):
    error = error_of(tmp_path, file={"SERVICE_ROOT": "/x"})
    assert error.code == ExitCode.INVALID_VALUE
    assert "SERVICE_ROOT" in error.message and "SERVICES_ROOT" in error.message
    assert all(name in error.message for name in SETTINGS_BY_NAME)


def test_unknown_cipug_environment_variable_is_an_error(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_VERBOSE": "2"})
    assert error.code == ExitCode.INVALID_VALUE and "CIPUG_VERBOSE" in error.message


def test_config_file_inside_the_config_file_is_an_error(tmp_path):
    error = error_of(tmp_path, file={"CONFIG_FILE": "/other.json"})
    assert error.code == ExitCode.INVALID_VALUE and "CONFIG_FILE" in error.message


def test_config_file_errors_have_their_exit_codes(tmp_path):
    assert error_of(tmp_path, {**BASE, "CIPUG_CONFIG_FILE": str(tmp_path / "absent.json")}).code == ExitCode.FILE_NOT_FOUND
    error = error_of(tmp_path, file="{not json")
    assert error.code == ExitCode.CONFIG_UNREADABLE and "line 1" in error.message
    assert error.message == (f"config file {tmp_path / 'cipug.json'} is not valid JSON: "
                             "Expecting property name enclosed in double quotes at line 1 column 2")
    assert error_of(tmp_path, file="[1, 2]").code == ExitCode.CONFIG_NOT_OBJECT
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert error_of(tmp_path, {**BASE, "CIPUG_CONFIG_FILE": str(folder)}).code == ExitCode.CONFIG_UNREADABLE


def test_a_config_file_starting_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "cipug.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"VERBOSITY": 2, "SERVICES_ROOT": "/srv/bom"}).encode())
    settings = load_settings({"HOME": "/h", "CIPUG_CONFIG_FILE": str(path)}, cwd=tmp_path)
    assert settings.verbosity == 2 and settings.services_root == Path("/srv/bom")


def test_a_config_file_that_is_not_utf_8_cannot_be_read(tmp_path):
    path = tmp_path / "cipug.json"
    path.write_bytes(b'{"SERVICES_ROOT": "/srv/\xff"}')
    error = error_of(tmp_path, {**BASE, "CIPUG_CONFIG_FILE": str(path)})
    assert error.code == ExitCode.CONFIG_UNREADABLE and "cannot be read" in error.message


def test_services_root_is_required(tmp_path):
    error = error_of(tmp_path, {"HOME": "/h"})
    assert "SERVICES_ROOT is required" in error.message


def test_commands_split_like_a_shell_and_lists_on_commas(tmp_path):
    settings = load(tmp_path, {**BASE, "CIPUG_COMPOSE_TOOL": "docker compose",
                               "CIPUG_SNAPPER_TOOL": "snapper --no-dbus",
                               "CIPUG_SKOPEO_TOOL": "skopeo --registries-conf '/a b/r.conf'",
                               "CIPUG_SERVICES_FILTER_EXCLUDE": " web, db ,,"})
    assert settings.compose_tool == ("docker", "compose")
    assert settings.snapper_tool == ("snapper", "--no-dbus")
    assert settings.skopeo_tool == ("skopeo", "--registries-conf", "/a b/r.conf")
    assert settings.services_filter_exclude == ("web", "db")
    assert load(tmp_path, file={"SERVICES_FILTER": ["a", "b"]}).services_filter == ("a", "b")


def test_a_command_with_an_unclosed_quote_is_refused(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_COMPOSE_TOOL": "docker 'compose"})
    assert error.code == ExitCode.INVALID_VALUE
    assert "CIPUG_COMPOSE_TOOL" in error.message and "a command line (No closing quotation)" in error.message


def test_an_empty_command_is_refused(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_CONTAINER_TOOL": "  "})
    assert error.code == ExitCode.INVALID_VALUE and "a non-empty command line" in error.message


def test_print_config_json_has_every_setting_with_typed_values(tmp_path):
    data = load(tmp_path, {**BASE, "CIPUG_SKOPEO_TOOL": "skopeo --registries-conf '/a b/r.conf'"}).as_json()
    assert list(data) == list(SETTINGS_BY_NAME)
    assert data["SERVICES_ROOT"] == "/srv/services"
    assert data["SERVICE_PULL"] is True and data["VERBOSITY"] == 1 and data["SNAPSHOTS_MAX_AGE_BTRBK"] == 36.0
    assert data["SKOPEO_TOOL"] == "skopeo --registries-conf '/a b/r.conf'"
    assert data["SERVICES_FILTER"] == []
    json.dumps(data)


def test_print_config_shows_notification_urls_only_by_their_schemes(tmp_path):
    settings = load(tmp_path, {**BASE, "CIPUG_NOTIFY_URLS": "ntfys://user:s3cret@ntfy.example/topic,json://hook.lan/x"})
    assert settings.notify_urls == ("ntfys://user:s3cret@ntfy.example/topic", "json://hook.lan/x")
    assert settings.as_json()["NOTIFY_URLS"] == ["ntfys://(hidden)", "json://(hidden)"]
    assert "NOTIFY_URLS=ntfys://(hidden),json://(hidden)" in settings.as_lines()
    assert not any("s3cret" in line or "hook.lan" in line for line in settings.as_lines())


def test_print_config_lines_round_trip_through_the_environment(tmp_path):
    first = load(tmp_path, {**BASE, "CIPUG_SERVICES_FILTER": "a,b", "CIPUG_PRUNE_IMAGES": "no"})
    environ = {"HOME": "/h", **{f"CIPUG_{line.split('=', 1)[0]}": line.split("=", 1)[1] for line in first.as_lines()}}
    second = load(tmp_path, environ)
    assert second.as_json() == first.as_json()
    assert second == first  # sources differ, and are not compared


def test_relative_services_root_in_environment_is_made_absolute(tmp_path):
    settings = load(tmp_path, {"HOME": "/h", "CIPUG_SERVICES_ROOT": "srv"})
    assert settings.services_root == tmp_path / "srv"
    assert os.path.isabs(settings.as_json()["SERVICES_ROOT"])


def test_settings_are_frozen_and_changed_with_dataclasses_replace(tmp_path):
    settings = load(tmp_path, {**BASE, "CIPUG_SERVICES_FILTER": "a,b"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.services_filter = ()  # type: ignore[misc]
    changed = dataclasses.replace(settings, services_filter=(), service_snapshot=False)
    assert changed.services_filter == () and changed.service_snapshot is False
    assert settings.services_filter == ("a", "b") and settings.service_snapshot is True
    assert changed != settings
    assert changed.sources == settings.sources
    assert dataclasses.replace(changed, services_filter=("a", "b"), service_snapshot=True) == settings
