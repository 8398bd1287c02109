"""Reading a service's TAGGED entries: a value that is no image reference is a .env error, found before any lookup."""

from __future__ import annotations

import pytest

from cipug.errors import ExitCode
from tests.support.fakestack import DIGEST_A

BAD_REFERENCES = {
    "UPPER:case": "repository name 'UPPER' must be lowercase",
    "foo@sha256:short": "digest 'sha256:short' is not sha256",
    "docker://nginx:latest": "it starts with 'docker://'",
    "https://ghcr.io/org/app:1": "it starts with 'https://'",
    "nginx:lat est": "is not valid",
}


@pytest.mark.parametrize("resolver", ["skopeo", "registry"])
@pytest.mark.parametrize("reference", BAD_REFERENCES)
def test_a_bad_reference_is_exit_26_naming_file_and_line_without_a_lookup(stack, resolver, reference):
    env_file = stack.service("web", f"# web\nTZ=UTC\nSERVICE_WEB_IMAGE_TAGGED='{reference}'\n")

    code = stack.run(resolver=resolver)

    assert code == ExitCode.ENV_FILE_INVALID
    assert stack.calls() == []
    line = stack.err.getvalue()
    assert line.startswith(f"cipug: error: web: {env_file}:3: SERVICE_WEB_IMAGE_TAGGED {reference!r} is not an "
                           f"image reference (") and line.count("\n") == 1
    assert BAD_REFERENCES[reference] in line and "; expected one like nextcloud:latest" in line


def test_a_bad_reference_leaves_other_services_to_go_on(stack):
    stack.service("bad", "SERVICE_BAD_IMAGE_TAGGED=Bad:1\n")
    good = stack.service("good", "SERVICE_GOOD_IMAGE_TAGGED=nginx:latest\n")
    stack.skopeo("nginx:latest", "docker.io/library/nginx", DIGEST_A)

    code = stack.run(service_snapshot="false", service_pull="false", service_stop_start="false", prune_images="false")

    assert code == ExitCode.ENV_FILE_INVALID
    assert [call[-1] for call in stack.calls()] == ["docker://nginx:latest"]
    assert f"nginx@{DIGEST_A}" in good.read_text()


def test_an_empty_reference_says_so(stack):
    env_file = stack.service("web", "SERVICE_WEB_IMAGE_TAGGED=\n")
    assert stack.run() == ExitCode.ENV_FILE_INVALID
    assert f"{env_file}:1: SERVICE_WEB_IMAGE_TAGGED is empty; expected one like nextcloud:latest" in stack.err.getvalue()
