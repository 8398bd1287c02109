"""The registry resolver against the real loopback docker-registry: it must say what skopeo says."""

from __future__ import annotations

import io
import json
import secrets

import pytest

from tests.support import realstack
from cipug.errors import ExitCode
from cipug.errors import CipugError
from cipug.lookup.references import Resolution
from cipug.log import VERBOSE, Log
from cipug.lookup.registry import RegistryResolver

pytestmark = pytest.mark.integration


def skopeo_says(containers, reference: str) -> Resolution:
    inspected = containers.inspect(reference)
    return Resolution(inspected["Name"], inspected["Digest"])


@pytest.fixture
def repository(registry) -> str:
    """A repository of its own in the session's registry."""
    return f"{registry.host}/resolver/{secrets.token_hex(4)}"


@pytest.fixture
def resolver(registry):
    made = RegistryResolver((registry.host,), 10, Log(VERBOSE, out=io.StringIO()), None)
    yield made
    made.close()


def push_manifest_list(containers, reference: str, format_name: str) -> list[str]:
    """Push an amd64 and an arm64 image as one multi-arch tag; return the instances' digests."""
    instances = []
    list_name = f"localhost/resolver/list-{secrets.token_hex(4)}"
    containers.podman("manifest", "create", list_name)
    try:
        for arch in ("amd64", "arm64"):
            instance = f"{reference}-{arch}"
            instances.append(containers.push_image(instance))
            containers.podman("manifest", "add", "--arch", arch, list_name, f"docker://{instance}")
        containers.podman("manifest", "push", "--all", "--format", format_name, list_name, f"docker://{reference}")
    finally:
        containers.podman("manifest", "rm", list_name)
    return instances


def test_single_image_like_skopeo(containers, repository, resolver):
    reference = f"{repository}:single"
    pushed = containers.push_image(reference)
    resolution = resolver.resolve(reference)
    assert resolution == skopeo_says(containers, reference)
    assert resolution == Resolution(repository, pushed)


@pytest.mark.parametrize("format_name, media_type", [
    ("v2s2", "application/vnd.docker.distribution.manifest.list.v2+json"),
    ("oci", "application/vnd.oci.image.index.v1+json"),
])
def test_multi_arch_tag_is_the_list_digest_like_skopeo(containers, repository, resolver, format_name, media_type):
    reference = f"{repository}:multi"
    instances = push_manifest_list(containers, reference, format_name)
    raw = json.loads(realstack.run([*containers.skopeo, "inspect", "--raw", f"docker://{reference}"]).stdout)
    assert raw["mediaType"] == media_type
    resolution = resolver.resolve(reference)
    assert resolution == skopeo_says(containers, reference)
    assert resolution.digest not in instances


def test_unknown_tag_is_final(containers, repository, resolver):
    containers.push_image(f"{repository}:exists")
    with pytest.raises(CipugError, match="tag missing not found") as raised:
        resolver.resolve(f"{repository}:missing")
    assert raised.value.code == ExitCode.RESOLVE_FAILED


def test_plain_http_registry_not_listed_falls_back_to_skopeo(containers, repository):
    reference = f"{repository}:fallback"
    containers.push_image(reference)
    out = io.StringIO()
    resolver = RegistryResolver((), 10, Log(VERBOSE, out=out), lambda text: skopeo_says(containers, text))
    try:
        assert resolver.resolve(reference) == skopeo_says(containers, reference)
    finally:
        resolver.close()
    assert f"{reference}: falling back to skopeo because TLS with" in out.getvalue()
