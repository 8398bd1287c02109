"""`cipug adopt` on the real stack: a compose project that runs on tags is taken under cipug and pinned."""

from __future__ import annotations

import pytest

from tests.support.realstack import explain, repository, snapper_snapshots, without_notes

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["podman-compose", "docker compose"], indirect=True)
def test_a_project_on_tags_is_adopted_and_pinned_like_a_first_run(engine, services, cipug, tag):
    web, worker = tag("web"), tag("worker")
    digests = {"web": engine.push_image(web), "worker": engine.push_image(worker)}
    compose = (f"# as it was before cipug\nservices:\n  web:\n    image: {web}   # the app\n"
               f"  worker:\n    image: \"{worker}\"\n    restart: always\n"
               "networks:\n  default:\n    name: podman\n    external: true\n")
    service = services.add("adopted", "TZ=UTC\n", compose, start=True)
    name = service.name.upper().replace("-", "_")

    result = cipug.run("adopt", service.name, "--yes")

    assert result.returncode == 0, explain(result)
    assert (service.folder / "compose.yml").read_text() == (
        compose.replace(web, f"${{SERVICE_{name}_WEB_IMAGE_HASHED}}")
        .replace(worker, f"${{SERVICE_{name}_WORKER_IMAGE_HASHED}}"))
    assert without_notes(service.env_file.read_text()) == (
        f"TZ=UTC\nSERVICE_{name}_WEB_IMAGE_TAGGED={web}\n"
        f"SERVICE_{name}_WEB_IMAGE_HASHED={repository(web)}@{digests['web']}\n"
        f"SERVICE_{name}_WORKER_IMAGE_TAGGED={worker}\n"
        f"SERVICE_{name}_WORKER_IMAGE_HASHED={repository(worker)}@{digests['worker']}\n")
    running = engine.containers(service.name)
    assert {key: item["ImageName"] for key, item in running.items()} == {
        "web": f"{repository(web)}@{digests['web']}", "worker": f"{repository(worker)}@{digests['worker']}"}
    assert all(item["State"]["Running"] for item in running.values())
    assert len(snapper_snapshots(service.snapper_config)) == 1
    # A second adopt finds nothing left to do, and an update run nothing to change.
    again = cipug.run("adopt", service.name, "--yes")
    assert again.returncode == 0 and "already uses" in again.stdout, explain(again)


def test_a_file_it_cannot_edit_is_refused_with_the_line(services, cipug):
    compose = "x-app: &app\n  image: nginx:1\nservices:\n  web:\n    <<: *app\n"
    service = services.add("refused", "", compose, snapper=False)

    result = cipug.run("adopt", service.name, "--yes")

    assert result.returncode == 3, explain(result)
    assert "compose.yml: line 5: service web merges a mapping" in result.stderr
    assert (service.folder / "compose.yml").read_text() == compose
    assert service.env_file.read_text() == ""
