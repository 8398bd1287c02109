"""The registry resolver against the real loopback docker-registry: it must say what skopeo says."""

from __future__ import annotations

import io
import json
import secrets
import shlex
from collections.abc import Callable

import pytest

from tests.support import realstack
from cipug.errors import ExitCode
from cipug.errors import CipugError
from cipug.lookup.references import Resolution
from cipug.log import VERBOSE, Log
from cipug.lookup import registry as registry_module
from cipug.lookup.registries_conf import load_registries_conf
from cipug.lookup.registry import RegistryResolver
from cipug.lookup import versions
from cipug.lookup.versions import registry_versions
from cipug.settings import load_settings

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


def push_manifest_list(containers, reference: str, format_name: str,
                       push: Callable[[str, str], str] | None = None) -> list[str]:
    """Push an amd64 and an arm64 image as one multi-arch tag; return the instances' digests.

    `push(reference, arch)` pushes an instance (default: a new image) and returns its digest.
    """
    instances = []
    list_name = f"localhost/resolver/list-{secrets.token_hex(4)}"
    containers.podman("manifest", "create", list_name)
    try:
        for arch in ("amd64", "arm64"):
            instance = f"{reference}-{arch}"
            instances.append(push(instance, arch) if push else containers.push_image(instance))
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


# What the default resolver (make_lookups) reads of registries.conf, against real skopeo.

def conf_file(containers, tmp_path, extra: str) -> tuple[str, ...]:
    """A skopeo argv prefix whose registries.conf is the stack's (loopback registries insecure) plus `extra`."""
    path = tmp_path / "registries.conf"
    path.write_text(containers.registries_conf.read_text() + extra)
    return ("skopeo", "--registries-conf", str(path))


def resolver_reading(skopeo_tool, registry, out, fallback=None):
    conf = load_registries_conf(skopeo_tool)
    return RegistryResolver((registry.host,), 10, Log(VERBOSE, out=out, err=out), fallback, conf)


def skopeo_with(skopeo_tool, containers):
    def inspect(reference: str) -> Resolution:
        result = realstack.run([*skopeo_tool, "inspect", "--no-tags", f"docker://{reference}"], env=containers.env,
                               check=False)
        if result.returncode != 0:
            raise CipugError(f"{reference}: skopeo: {result.stderr.strip()}", ExitCode.RESOLVE_FAILED)
        inspected = json.loads(result.stdout)
        return Resolution(inspected["Name"], inspected["Digest"])

    return inspect


def test_the_stacks_registries_conf_leaves_the_answer_to_the_resolver(containers, registry, repository):
    reference = f"{repository}:insecure-only"
    containers.push_image(reference)
    out = io.StringIO()
    resolver = resolver_reading(containers.skopeo, registry, out)
    try:
        assert resolver.resolve(reference) == skopeo_says(containers, reference)
    finally:
        resolver.close()
    assert resolver.fallbacks == {}


def test_a_mirror_for_the_registry_goes_to_skopeo_and_agrees(containers, registry, repository, tmp_path):
    reference = f"{repository}:mirrored"
    primary = containers.push_image(reference)
    mirror = f"{registry.host}/mirror/{secrets.token_hex(4)}"
    # The mirror holds another image under the tag: skopeo answers with the mirror's, a HEAD would not.
    mirrored = containers.push_image(f"{mirror}:mirrored")
    skopeo_tool = conf_file(containers, tmp_path, f'[[registry]]\nprefix = "{repository}"\nlocation = "{repository}"\n'
                                                  'insecure = true\n'
                                                  f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n')
    out = io.StringIO()
    resolver = resolver_reading(skopeo_tool, registry, out, skopeo_with(skopeo_tool, containers))
    try:
        resolution = resolver.resolve(reference)
    finally:
        resolver.close()
    assert resolution == skopeo_with(skopeo_tool, containers)(reference) == Resolution(repository, mirrored)
    assert mirrored != primary
    assert "configures the mirror" in resolver.fallbacks[reference]
    assert f"{reference}: falling back to skopeo because" in out.getvalue()


def test_a_blocked_registry_goes_to_skopeo_which_refuses(containers, registry, repository, tmp_path):
    reference = f"{repository}:blocked"
    containers.push_image(reference)
    skopeo_tool = conf_file(containers, tmp_path, f'[[registry]]\nprefix = "{repository}"\nlocation = "{repository}"\n'
                                                  'blocked = true\n')
    resolver = resolver_reading(skopeo_tool, registry, io.StringIO(), skopeo_with(skopeo_tool, containers))
    try:
        with pytest.raises(CipugError, match="blocked"):
            resolver.resolve(reference)
    finally:
        resolver.close()
    assert "blocks" in resolver.fallbacks[reference]


# docker.io/library/ and short names, with the loopback registry standing in for Docker Hub: skopeo
# reaches it through a registries.conf rewrite of docker.io (its Name stays docker.io/…), the
# resolver through its Docker Hub endpoint pointed there.

@pytest.fixture
def hub_stand_in(containers, registry, tmp_path, monkeypatch):
    monkeypatch.setattr(registry_module, "_DOCKER_HUB_ENDPOINT", registry.host)
    skopeo_tool = conf_file(containers, tmp_path, f'[[registry]]\nprefix = "docker.io"\nlocation = "{registry.host}"\n'
                                                  'insecure = true\n')
    # Not from registries.conf: that rewrite is what would send the resolver to skopeo.
    resolver = RegistryResolver(("docker.io", registry.host), 10, Log(VERBOSE, out=io.StringIO()), None)
    yield resolver, skopeo_with(skopeo_tool, containers)
    resolver.close()


@pytest.mark.parametrize("written", ["{name}:hub", "library/{name}:hub", "docker.io/library/{name}:hub",
                                     "index.docker.io/library/{name}:hub", "docker.io/{name}:hub"])
def test_official_images_with_and_without_docker_io_library(containers, registry, hub_stand_in, written):
    resolver, skopeo = hub_stand_in
    name = f"official{secrets.token_hex(3)}"
    pushed = containers.push_image(f"{registry.host}/library/{name}:hub")
    reference = written.format(name=name)
    resolution = resolver.resolve(reference)
    assert resolution == skopeo(reference) == Resolution(f"docker.io/library/{name}", pushed)


def test_user_repositories_on_docker_io_like_skopeo(containers, registry, hub_stand_in):
    resolver, skopeo = hub_stand_in
    name = f"someone/app{secrets.token_hex(3)}"
    pushed = containers.push_image(f"{registry.host}/{name}:hub")
    for reference in (f"{name}:hub", f"docker.io/{name}:hub"):
        assert resolver.resolve(reference) == skopeo(reference) == Resolution(f"docker.io/{name}", pushed)


@pytest.mark.parametrize("format_name", ["v2s2", "oci"])
def test_multi_arch_official_image_like_skopeo(containers, registry, hub_stand_in, format_name):
    resolver, skopeo = hub_stand_in
    name = f"multi{secrets.token_hex(3)}"
    instances = push_manifest_list(containers, f"{registry.host}/library/{name}:hub", format_name)
    resolution = resolver.resolve(f"{name}:hub")
    assert resolution == skopeo(f"{name}:hub") == skopeo(f"docker.io/library/{name}:hub")
    assert resolution.name == f"docker.io/library/{name}" and resolution.digest not in instances


# Image versions (registry_versions): over HTTP as the registry resolver reads them, and with skopeo.

def versions_both_ways(containers, registry, tmp_path, pinned: str) -> tuple[dict[str, str], dict[str, str]]:
    environ = {"CIPUG_SERVICES_ROOT": str(tmp_path), "CIPUG_SKOPEO_TOOL": shlex.join(containers.skopeo),
               "CIPUG_REGISTRY_INSECURE_HOSTS": registry.host, "CIPUG_REGISTRY_FALLBACK": "false"}
    log = Log(VERBOSE, out=io.StringIO())
    over_http = registry_versions(load_settings(environ, cwd=tmp_path), log, [pinned])
    with_skopeo = registry_versions(load_settings({**environ, "CIPUG_RESOLVER": "skopeo"}, cwd=tmp_path), log,
                                    [pinned])
    return over_http, with_skopeo


def test_the_version_label_over_http_is_what_skopeo_reads(containers, registry, repository, workdir, tmp_path):
    reference = f"{repository}:versioned"
    pinned = f"{repository}@{realstack.push_versioned(containers, reference, '1.2.3', workdir)}"
    assert versions_both_ways(containers, registry, tmp_path, pinned) == ({pinned: "1.2.3"}, {pinned: "1.2.3"})


def test_an_unlabelled_image_is_its_build_time_both_ways(containers, registry, repository, tmp_path):
    pinned = f"{repository}@{containers.push_image(f'{repository}:unlabelled')}"
    over_http, with_skopeo = versions_both_ways(containers, registry, tmp_path, pinned)
    assert over_http == with_skopeo and over_http[pinned].startswith("built ")


@pytest.mark.parametrize("format_name", ["v2s2", "oci"])
def test_a_multi_arch_tag_gives_this_platforms_version_like_skopeo(containers, registry, repository, workdir, tmp_path,
                                                                   format_name):
    reference = f"{repository}:multi-versioned"
    instances = push_manifest_list(containers, reference, format_name,
                                   lambda instance, arch: realstack.push_versioned(containers, instance, f"4.5-{arch}", workdir))
    pinned = f"{repository}@{skopeo_says(containers, reference).digest}"
    over_http, with_skopeo = versions_both_ways(containers, registry, tmp_path, pinned)
    assert over_http == with_skopeo == {pinned: f"4.5-{versions.machine_platform()[0]}"}
    assert pinned.rpartition("@")[2] not in instances
