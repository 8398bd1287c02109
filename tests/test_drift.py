"""cipug.drift: which containers run something other than what .env pins."""

from __future__ import annotations

from cipug.drift import find_drift
from cipug.plan import ImageEntry

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
WEB = ImageEntry("SERVICE_WEB_IMAGE_TAGGED", "SERVICE_WEB_IMAGE_HASHED", "nginx:latest", f"docker.io/library/nginx@{A}")


def podman(name: str, image: str, service: str = "web") -> dict:
    return {"Name": name, "ImageName": image, "Config": {"Labels": {"com.docker.compose.service": service}}}


def docker(name: str, image: str, service: str = "web") -> dict:
    return {"Name": f"/{name}", "Config": {"Image": image, "Labels": {"com.docker.compose.service": service}}}


def test_a_container_on_its_pin_is_no_drift_however_the_reference_is_spelled():
    assert find_drift([WEB], [podman("web_1", f"docker.io/library/nginx@{A}"), docker("web-1", f"nginx@{A}")]) == []


def test_a_container_on_another_digest_of_the_pinned_repository_drifts():
    [drift] = find_drift([WEB], [docker("web-1", f"nginx@{B}")])
    assert (drift.container, drift.entry, drift.tag) == ("web-1", WEB, False)
    assert drift.describe("compose.yml") == ("container web-1 runs sha256:bbbbbbbbbbbb, but SERVICE_WEB_IMAGE_HASHED "
                                            "pins sha256:aaaaaaaaaaaa")


def test_a_container_on_a_tag_names_the_compose_service_that_does_not_use_the_pin():
    [drift] = find_drift([WEB], [podman("proj_web_1", "docker.io/library/nginx:latest", "frontend")])
    assert drift.tag and drift.compose_service == "frontend"
    assert "compose service frontend in compose.yml does not use ${SERVICE_WEB_IMAGE_HASHED}" in drift.describe(
        "compose.yml")


def test_containers_of_other_repositories_and_unpinned_entries_are_not_cipugs_business():
    unpinned = WEB._replace(current=None)
    assert find_drift([WEB], [podman("db_1", "docker.io/library/postgres:16", "db")]) == []
    assert find_drift([unpinned], [podman("web_1", f"nginx@{B}")]) == []
