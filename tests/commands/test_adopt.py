"""cipug.commands.adopt: compose files in the shape of popular self-hosted projects' (tests/data/compose)
taken under cipug, byte for byte except the image lines and the new .env entries; refusals name the line."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from cipug.commands.adopt import adopt, entry_name, plan_adoption
from cipug.errors import CipugError, ExitCode
from cipug.log import Log
from cipug.settings import load_settings

DATA = Path(__file__).parent.parent / "data" / "compose"


def folder_with(tmp_path: Path, name: str, data_file: str, env: bytes | None = None) -> Path:
    folder = tmp_path / "services" / name
    folder.mkdir(parents=True)
    shutil.copy(DATA / data_file, folder / "compose.yml")
    if env is not None:
        (folder / ".env").write_bytes(env)
    return folder


def run_adopt(tmp_path: Path, *names: str, every: bool = False, answer: bool = True, pin: bool = False):
    settings = load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path / "services"),
                              "CIPUG_HISTORY_FILE": str(tmp_path / "state" / "history.jsonl")}, cwd=tmp_path)
    out, err = io.StringIO(), io.StringIO()
    pinned: list[list[str]] = []
    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        return answer

    def pin_service(services: list[str]) -> ExitCode:
        pinned.append(services)
        return ExitCode.OK

    code = adopt(settings, Log(1, out, err), names, every=every, pin=pin, confirm=confirm, pin_service=pin_service)
    return code, out.getvalue(), err.getvalue(), questions, pinned


def test_nextcloud_images_become_hashed_variables_and_tagged_entries(tmp_path):
    env = b"# secrets\nMYSQL_PASSWORD=x\nLAST=1"  # no newline at the end
    folder = folder_with(tmp_path, "nextcloud", "nextcloud.yml", env)
    before = (DATA / "nextcloud.yml").read_text()

    code, out, _err, questions, pinned = run_adopt(tmp_path, "nextcloud", pin=True)

    assert code == ExitCode.OK
    assert (folder / "compose.yml").read_text() == (
        before.replace("image: mariadb:10.6", "image: ${SERVICE_NEXTCLOUD_DB_IMAGE_HASHED}")
        .replace("image: redis:alpine", "image: ${SERVICE_NEXTCLOUD_REDIS_IMAGE_HASHED}")
        .replace("image: nextcloud   #", "image: ${SERVICE_NEXTCLOUD_APP_IMAGE_HASHED}   #"))
    assert (folder / ".env").read_bytes() == env + (
        b"\nSERVICE_NEXTCLOUD_DB_IMAGE_TAGGED=mariadb:10.6\nSERVICE_NEXTCLOUD_REDIS_IMAGE_TAGGED=redis:alpine\n"
        b"SERVICE_NEXTCLOUD_APP_IMAGE_TAGGED=nextcloud\n")
    assert "+    image: ${SERVICE_NEXTCLOUD_DB_IMAGE_HASHED}" in out and "-    image: mariadb:10.6" in out
    assert questions == ["Write these changes (3 images), then pin them as an update run does?"]
    assert pinned == [["nextcloud"]]


def test_quotes_crlf_and_a_service_named_like_its_folder(tmp_path):
    gitea = folder_with(tmp_path, "gitea", "gitea.yml")
    vault = folder_with(tmp_path, "vaultwarden", "vaultwarden.yml", b"ADMIN_TOKEN=x\r\n")

    code, *_ = run_adopt(tmp_path, every=True)

    assert code == ExitCode.OK
    assert "    image: '${SERVICE_GITEA_SERVER_IMAGE_HASHED}'\n" in (gitea / "compose.yml").read_text()
    assert (gitea / ".env").read_text() == "SERVICE_GITEA_SERVER_IMAGE_TAGGED=gitea/gitea:1.21\n"
    assert (vault / "compose.yml").read_bytes() == (DATA / "vaultwarden.yml").read_bytes().replace(
        b"image: vaultwarden/server:latest\r\n", b"image: ${SERVICE_VAULTWARDEN_IMAGE_HASHED}\r\n")
    assert (vault / ".env").read_bytes() == b"ADMIN_TOKEN=x\r\nSERVICE_VAULTWARDEN_IMAGE_TAGGED=vaultwarden/server:latest\r\n"


def test_built_and_digest_pinned_services_are_left_and_said(tmp_path):
    folder = folder_with(tmp_path, "paperless", "paperless.yml")
    adoption = plan_adoption("paperless", folder, folder / "compose.yml", ".env")
    assert [item.tagged_key for item in adoption.adopted] == [
        "SERVICE_PAPERLESS_BROKER_IMAGE_TAGGED", "SERVICE_PAPERLESS_DB_IMAGE_TAGGED",
        "SERVICE_PAPERLESS_GOTENBERG_IMAGE_TAGGED"]
    assert adoption.left == ("webserver: built, no image",)


@pytest.mark.parametrize("data_file, message", [
    ("immich.yml", "line 9: the image of immich-server uses the variable IMMICH_VERSION"),
    ("anchors.yml", "line 8: service sonarr merges a mapping"),
], ids=["variables", "merge key"])
def test_what_cannot_be_edited_safely_is_refused_with_the_line_and_nothing_written(tmp_path, data_file, message):
    folder = folder_with(tmp_path, "app", data_file)

    code, _out, err, questions, _pinned = run_adopt(tmp_path, "app")

    assert code == ExitCode.ROLLBACK_REFUSED and message in err
    assert (folder / "compose.yml").read_bytes() == (DATA / data_file).read_bytes()
    assert not (folder / ".env").exists() and questions == []


def test_no_answer_changes_nothing_and_a_second_adopt_finds_nothing_left(tmp_path):
    folder = folder_with(tmp_path, "gitea", "gitea.yml")
    assert run_adopt(tmp_path, "gitea", answer=False)[0] == ExitCode.OK
    assert (folder / "compose.yml").read_bytes() == (DATA / "gitea.yml").read_bytes()
    assert not (folder / ".env").exists()

    run_adopt(tmp_path, "gitea")
    code, out, *_ = run_adopt(tmp_path, "gitea")
    assert code == ExitCode.OK and "already uses SERVICE_GITEA_SERVER_IMAGE_HASHED" in out


def test_an_entry_already_in_env_is_not_guessed_at(tmp_path):
    folder_with(tmp_path, "gitea", "gitea.yml", b"SERVICE_GITEA_SERVER_IMAGE_TAGGED=gitea/gitea:1.20\n")
    code, _out, err, *_ = run_adopt(tmp_path, "gitea")
    assert code == ExitCode.ROLLBACK_REFUSED and "SERVICE_GITEA_SERVER_IMAGE_TAGGED is already there" in err


def test_entry_names():
    assert entry_name("nextcloud", "app") == "NEXTCLOUD_APP"
    assert entry_name("vaultwarden", "vaultwarden") == "VAULTWARDEN"
    assert entry_name("my-apps", "immich-server") == "MY_APPS_IMMICH_SERVER"


def test_a_folder_without_compose_file_is_an_error(tmp_path):
    (tmp_path / "services" / "empty").mkdir(parents=True)
    with pytest.raises(CipugError) as raised:
        run_adopt(tmp_path, "empty")
    assert raised.value.code == ExitCode.DIRECTORY_NOT_FOUND
