import json
import os
import shlex
from pathlib import Path

import pytest

from cipug import errors
from cipug.config import SETTINGS_BY_NAME, load_config
from cipug.errors import CipugError

BASE = {"CIPUG_SERVICES_ROOT": "/srv/services", "HOME": "/home/someone"}


def load(tmp_path: Path, env: dict[str, str] | None = None, file: object = None):
    environ = dict(BASE if env is None else env)
    if file is not None:
        path = tmp_path / "cipug.json"
        path.write_text(file if isinstance(file, str) else json.dumps(file))
        environ["CIPUG_CONFIG_FILE"] = str(path)
    return load_config(environ, cwd=tmp_path)


def error_of(tmp_path: Path, env: dict[str, str] | None = None, file: object = None) -> CipugError:
    with pytest.raises(CipugError) as caught:
        load(tmp_path, env, file)
    return caught.value


def test_defaults_match_the_documented_table(tmp_path):
    config = load(tmp_path)
    assert config.compose_file_name == "compose.yml"
    assert config.env_file_name == ".env"
    assert config.compose_tool == ("podman-compose",)
    assert config.container_tool == ("podman",)
    assert config.service_stop_start is True
    assert config.stop_start_method == "compose"
    assert config.service_snapshot is True and config.service_pull is True and config.prune_images is True
    assert config.verbosity == 1
    assert config.cache_duration == 3600
    assert config.snapshots_max_age_snapper == 1.5 and config.snapshots_max_age_btrbk == 36
    assert config.resolve_workers == 8
    assert config.services_filter == () and config.services_filter_exclude == ()
    assert config.cache_location == "/home/someone/.cache/cipug/cache.json"
    assert config.history_file == "/home/someone/.local/state/cipug/history.jsonl"


def test_systemd_and_xdg_directories_place_cache_and_history(tmp_path):
    config = load(tmp_path, {**BASE, "CACHE_DIRECTORY": "/var/cache/cipug:/other", "STATE_DIRECTORY": "/var/lib/cipug"})
    assert config.cache_location == "/var/cache/cipug/cache.json"
    assert config.history_file == "/var/lib/cipug/history.jsonl"
    config = load(tmp_path, {**BASE, "XDG_CACHE_HOME": "/x/cache", "XDG_STATE_HOME": "/x/state"})
    assert config.cache_location == "/x/cache/cipug/cache.json"
    assert config.history_file == "/x/state/cipug/history.jsonl"


def test_environment_wins_over_file_and_file_over_default(tmp_path):
    config = load(tmp_path, {**BASE, "CIPUG_VERBOSITY": "3"},
                  {"VERBOSITY": 0, "CACHE_DURATION": 60, "SERVICES_ROOT": "/from/file"})
    assert config.verbosity == 3
    assert config.cache_duration == 60
    assert config.services_root == "/srv/services"
    assert config.sources["VERBOSITY"] == "environment variable CIPUG_VERBOSITY"
    assert config.sources["CACHE_DURATION"].startswith("setting CACHE_DURATION in ")
    assert config.sources["PRUNE_IMAGES"] == "default"


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path):
    config = load(tmp_path, {"HOME": "/h"}, {"SERVICES_ROOT": "services"})
    assert config.services_root == str(tmp_path / "services")


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
    assert error.code == errors.WRONG_TYPE
    assert "CIPUG_SERVICE_PULL" in error.message and '"maybe"' in error.message
    assert "true/false, 1/0 or yes/no" in error.message


def test_wrong_type_in_file_is_24_and_out_of_range_is_25(tmp_path):
    assert error_of(tmp_path, file={"VERBOSITY": "loud"}).code == errors.WRONG_TYPE
    assert error_of(tmp_path, file={"VERBOSITY": True}).code == errors.WRONG_TYPE
    assert error_of(tmp_path, file={"CACHE_DURATION": 1.5}).code == errors.WRONG_TYPE
    error = error_of(tmp_path, file={"VERBOSITY": 7})
    assert error.code == errors.INVALID_VALUE and "from 0 to 3" in error.message
    assert error_of(tmp_path, {**BASE, "CIPUG_STOP_START_METHOD": "reboot"}).code == errors.INVALID_VALUE


def test_unknown_setting_in_file_lists_known_ones(tmp_path):
    error = error_of(tmp_path, file={"SERVICE_ROOT": "/x"})
    assert error.code == errors.INVALID_VALUE
    assert "SERVICE_ROOT" in error.message and "SERVICES_ROOT" in error.message
    assert all(name in error.message for name in SETTINGS_BY_NAME)


def test_unknown_cipug_environment_variable_is_an_error(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_VERBOSE": "2"})
    assert error.code == errors.INVALID_VALUE and "CIPUG_VERBOSE" in error.message


def test_config_file_inside_the_config_file_is_an_error(tmp_path):
    error = error_of(tmp_path, file={"CONFIG_FILE": "/other.json"})
    assert error.code == errors.INVALID_VALUE and "CONFIG_FILE" in error.message


def test_config_file_errors_have_their_exit_codes(tmp_path):
    assert error_of(tmp_path, {**BASE, "CIPUG_CONFIG_FILE": str(tmp_path / "absent.json")}).code == errors.FILE_NOT_FOUND
    error = error_of(tmp_path, file="{not json")
    assert error.code == errors.CONFIG_UNREADABLE and "line 1" in error.message
    assert error_of(tmp_path, file="[1, 2]").code == errors.CONFIG_NOT_OBJECT
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert error_of(tmp_path, {**BASE, "CIPUG_CONFIG_FILE": str(folder)}).code == errors.CONFIG_UNREADABLE


def test_services_root_is_required(tmp_path):
    error = error_of(tmp_path, {"HOME": "/h"})
    assert "SERVICES_ROOT is required" in error.message


def test_commands_split_like_a_shell_and_lists_on_commas(tmp_path):
    config = load(tmp_path, {**BASE, "CIPUG_COMPOSE_TOOL": "docker compose",
                             "CIPUG_SNAPPER_TOOL": "snapper --no-dbus",
                             "CIPUG_SERVICES_FILTER_EXCLUDE": " web, db ,,"})
    assert config.compose_tool == ("docker", "compose")
    assert config.snapper_tool == ("snapper", "--no-dbus")
    assert config.services_filter_exclude == ("web", "db")
    assert load(tmp_path, file={"SERVICES_FILTER": ["a", "b"]}).services_filter == ("a", "b")


@pytest.mark.parametrize("command", [
    "docker compose", "  podman-compose\t--podman-path  /usr/bin/podman \n", "skopeo --registries-conf '/a b/r.conf'",
    'run "a b" c\\ d', "tool\x0cwith-form-feed \xa0nbsp", "#not-a-comment x",
])
def test_commands_split_as_shlex_splits_them(tmp_path, command):
    assert load(tmp_path, {**BASE, "CIPUG_COMPOSE_TOOL": command}).compose_tool == tuple(shlex.split(command))


def test_a_command_with_an_unclosed_quote_is_refused(tmp_path):
    error = error_of(tmp_path, {**BASE, "CIPUG_COMPOSE_TOOL": "docker 'compose"})
    assert error.code == errors.INVALID_VALUE
    assert "CIPUG_COMPOSE_TOOL" in error.message and "a command line (No closing quotation)" in error.message


def test_print_config_json_has_every_setting_with_typed_values(tmp_path):
    data = load(tmp_path, {**BASE, "CIPUG_SKOPEO_TOOL": "skopeo --registries-conf '/a b/r.conf'"}).as_json()
    assert list(data) == list(SETTINGS_BY_NAME)
    assert data["SERVICES_ROOT"] == "/srv/services"
    assert data["SERVICE_PULL"] is True and data["VERBOSITY"] == 1 and data["SNAPSHOTS_MAX_AGE_BTRBK"] == 36.0
    assert data["SKOPEO_TOOL"] == "skopeo --registries-conf '/a b/r.conf'"
    assert data["SERVICES_FILTER"] == []
    json.dumps(data)


def test_print_config_lines_round_trip_through_the_environment(tmp_path):
    first = load(tmp_path, {**BASE, "CIPUG_SERVICES_FILTER": "a,b", "CIPUG_PRUNE_IMAGES": "no"})
    environ = {"HOME": "/h", **{f"CIPUG_{line.split('=', 1)[0]}": line.split("=", 1)[1] for line in first.as_lines()}}
    assert load(tmp_path, environ).as_json() == first.as_json()


def test_relative_services_root_in_environment_is_made_absolute(tmp_path):
    config = load(tmp_path, {"HOME": "/h", "CIPUG_SERVICES_ROOT": "srv"})
    assert config.services_root == str(tmp_path / "srv")
    assert os.path.isabs(config.as_json()["SERVICES_ROOT"])
