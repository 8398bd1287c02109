"""cipug.programs.containers: what the container tool says runs, and what version an image is."""

from __future__ import annotations

import io
import json

from cipug.log import Log
from cipug.programs.containers import compose_containers, image_version, image_versions
from cipug.programs.process import Runner
from cipug.settings import load_settings

PIN = "docker.io/library/nextcloud@sha256:" + "a" * 64


def settings(tmp_path):
    return load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path), "HOME": str(tmp_path)}, cwd=tmp_path)


def test_the_oci_version_label_is_the_version_else_the_build_time():
    assert image_version({"Labels": {"org.opencontainers.image.version": "29.0.4"}}) == "29.0.4"
    assert image_version({"Config": {"Labels": {"org.opencontainers.image.version": " 1.2 "}}}) == "1.2"
    assert image_version({"Labels": None, "Created": "2026-11-30T12:34:56.789Z"}) == "built 2026-11-30 12:34:56"
    assert image_version({"Labels": {}}) is None


def test_versions_of_images_that_are_not_local_are_left_out(fp, tmp_path):
    gone = "gone@sha256:" + "b" * 64
    # docker names the pin's repository in short form; the digest is what matches.
    fp.register(["podman", "image", "inspect", PIN, gone], returncode=125, stdout=json.dumps([{
        "Labels": {"org.opencontainers.image.version": "29.0.4"}, "RepoDigests": ["nextcloud@sha256:" + "a" * 64]}]))
    runner = Runner(Log(0, io.StringIO(), io.StringIO()))
    assert image_versions(settings(tmp_path), runner, [PIN, gone, PIN]) == {PIN: "29.0.4"}
    assert image_versions(settings(tmp_path), runner, []) == {}


def test_containers_are_grouped_by_their_compose_project_folder(fp, tmp_path):
    folder = tmp_path / "web"
    folder.mkdir()
    label = "com.docker.compose.project.working_dir"
    fp.register(["podman", "ps", "-a", "-q", "--filter", f"label={label}"], stdout="id1\nid2\n")
    fp.register(["podman", "inspect", "id1", "id2"], stdout=json.dumps([
        {"Id": "id1", "Config": {"Labels": {label: str(folder)}}},
        {"Id": "id2", "Config": {"Labels": {label: str(folder) + "/"}}}]))
    found = compose_containers(settings(tmp_path), Runner(Log(0, io.StringIO(), io.StringIO())))
    assert {key: [item["Id"] for item in value] for key, value in found.items()} == {folder.resolve(): ["id1", "id2"]}
