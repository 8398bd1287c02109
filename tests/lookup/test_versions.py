"""registry_versions: image versions read from a fake registry on 127.0.0.1, or from skopeo."""

from __future__ import annotations

import hashlib
import json

import pytest

from cipug.log import VERBOSE, Log
from cipug.lookup import versions
from cipug.lookup.resolve import recording
from cipug.lookup.versions import registry_versions
from cipug.settings import load_settings
from tests.lookup.fake_registry import DOCKER_V2, FakeRegistry

pytestmark = pytest.mark.usefixtures("home")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def config_blob(version: str | None = None, created: str = "2026-11-30T12:00:00.123456789Z") -> bytes:
    labels = {"org.opencontainers.image.version": version} if version else {}
    return json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                       "config": {"Labels": labels}}).encode()


class Images:
    """Images in a fake registry: each one's manifest and config, served by digest."""

    def __init__(self, fake: FakeRegistry) -> None:
        self.fake = fake

    def image(self, config: bytes, media_type: str = DOCKER_V2) -> str:
        """An image's manifest digest."""
        self.fake.blobs[digest_of(config)] = config
        manifest = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                               "config": {"mediaType": CONFIG, "digest": digest_of(config), "size": len(config)},
                               "layers": []}).encode()
        return self.document(media_type, manifest)

    def index(self, platforms: dict[tuple[str, str], str]) -> str:
        """An OCI index of (os, architecture) -> manifest digest, in that order."""
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": DOCKER_V2, "digest": digest, "size": 1, "platform": {"os": os, "architecture": arch}}
            for (os, arch), digest in platforms.items()]}).encode()
        return self.document(OCI_INDEX, body)

    def document(self, media_type: str, body: bytes) -> str:
        self.fake.documents[digest_of(body)] = (media_type, body)
        return digest_of(body)


@pytest.fixture
def fake(registries):
    registry = registries()
    return registry


@pytest.fixture
def images(fake) -> Images:
    return Images(fake)


@pytest.fixture
def read(fake, tmp_path, out):
    """registry_versions with settings for the fake (an empty registries.conf for skopeo and the resolver; the
    remembered challenges next to a cache in tmp_path, not the machine's)."""
    conf = tmp_path / "registries.conf"
    conf.write_text("")

    def read_versions(pinned: list[str], insecure: tuple[str, ...] = (), **settings: str) -> dict[str, str]:
        environ = {"CIPUG_SERVICES_ROOT": str(tmp_path), "CIPUG_CACHE_LOCATION": str(tmp_path / "cache.json"),
                   "CIPUG_SKOPEO_TOOL": f"skopeo --registries-conf {conf}",
                   "CIPUG_REGISTRY_INSECURE_HOSTS": ",".join((fake.host, *insecure)),
                   **{f"CIPUG_{name}": value for name, value in settings.items()}}
        return registry_versions(load_settings(environ, cwd=tmp_path), Log(VERBOSE, out=out, err=out), pinned)

    return read_versions


def test_a_single_manifest_gives_its_config_label(fake, images, read):
    pinned = f"{fake.host}/org/app@{images.image(config_blob('1.2.3'))}"
    assert read([pinned]) == {pinned: "1.2.3"}
    assert [(seen.method, seen.path.rsplit("/", 2)[1]) for seen in fake.requests] == [
        ("GET", "manifests"), ("GET", "blobs")]
    assert set(fake.requests[0].accept.split(", ")) >= {DOCKER_V2, OCI_MANIFEST, OCI_INDEX}


def test_without_a_label_the_creation_time_is_the_version(fake, images, read):
    pinned = f"{fake.host}/org/app@{images.image(config_blob(), OCI_MANIFEST)}"
    assert read([pinned]) == {pinned: "built 2026-11-30 12:00:00"}


@pytest.mark.parametrize("machine, expected", [(("arm64", None), "9.0-arm"), (("amd64", None), "9.0-amd"),
                                               (("riscv64", None), "9.0-arm")],
                         ids=["arm64", "amd64", "no match: the first linux image"])
def test_an_index_gives_the_version_for_this_machines_platform(fake, images, read, monkeypatch, machine, expected):
    monkeypatch.setattr(versions, "machine_platform", lambda: machine)
    attestation = images.image(config_blob("not an image"))
    index = images.index({("unknown", "unknown"): attestation, ("linux", "arm64"): images.image(config_blob("9.0-arm")),
                          ("linux", "amd64"): images.image(config_blob("9.0-amd"))})
    pinned = f"{fake.host}/org/app@{index}"
    assert read([pinned]) == {pinned: expected}
    assert len(fake.manifest_requests()) == 2


@pytest.mark.parametrize("tampered", ["manifest", "config"])
def test_a_document_that_does_not_match_its_digest_is_refused(fake, images, read, out, tampered):
    manifest = images.image(config_blob("6.6.6"))
    media_type, body = fake.documents[manifest]
    if tampered == "manifest":
        fake.documents[manifest] = (media_type, body.replace(b"[]", b"[ ]"))
    else:
        [config] = fake.blobs
        fake.blobs[config] = config_blob("6.6.7")
    pinned = f"{fake.host}/org/app@{manifest}"
    assert read([pinned]) == {}
    assert "whose sha256 is not its digest" in out.getvalue() and "refused" in out.getvalue()


def test_a_blob_redirect_is_followed_without_the_authorization_header(fake, images, read):
    cdn = FakeRegistry()
    try:
        fake.auth = "bearer"
        pinned = f"{fake.host}/org/app@{images.image(config_blob('2.0'))}"
        cdn.blobs = fake.blobs
        fake.blob_redirect = f"http://{cdn.host}/cdn"
        assert read([pinned], (cdn.host,)) == {pinned: "2.0"}
        [blob_request] = [seen for seen in fake.requests if "/blobs/" in seen.path and seen.authorization]
        assert blob_request.authorization.startswith("Bearer ")
        [at_cdn] = cdn.requests
        assert at_cdn.path.startswith("/cdn/sha256:") and at_cdn.query == {"signed": "1"}
        assert at_cdn.authorization is None
    finally:
        cdn.stop()


def test_a_redirect_to_plain_http_elsewhere_is_not_followed(fake, images, read, out, fp):
    cdn = FakeRegistry()
    try:
        pinned = f"{fake.host}/org/app@{images.image(config_blob('2.0'))}"
        fake.blob_redirect = f"http://{cdn.host.replace('127.0.0.1', 'localhost')}/cdn"
        skopeo_inspect(fp, pinned, returncode=1, stderr='time="…" level=fatal msg="no such blob"')
        assert read([pinned]) == {}
        assert cdn.requests == []
        assert "is not in REGISTRY_INSECURE_HOSTS" in out.getvalue()
    finally:
        cdn.stop()


def test_a_bearer_challenge_is_met_with_one_token_for_every_repository(fake, images, read):
    fake.auth = "bearer"
    pinned = [f"{fake.host}/org/{name}@{images.image(config_blob(name))}" for name in ("app", "other", "third")]
    assert read(pinned * 2) == {reference: reference.split("/")[2].split("@")[0] for reference in pinned}
    [token] = fake.token_requests()
    assert set(token.scopes) == {f"repository:org/{name}:pull" for name in ("app", "other", "third")}
    # The first read met the challenge; each reference was read once.
    assert [seen.authorization for seen in fake.manifest_requests()][0] is None
    assert len([seen for seen in fake.manifest_requests() if seen.authorization]) == 3


def test_unknown_manifests_are_left_out_and_said_at_verbosity_2(fake, read, out):
    pinned = f"{fake.host}/org/app@sha256:{'c' * 64}"
    assert read([pinned]) == {}
    assert f"{pinned}: version not known:" in out.getvalue() and "not found" in out.getvalue()


def test_a_registry_stopped_earlier_in_the_run_is_sent_nothing(fake, images, read, out):
    pinned = f"{fake.host}/org/app@{images.image(config_blob('1.0'))}"
    with recording() as report:
        report.stopped[fake.host] = None
        assert read([pinned]) == {}
    assert fake.requests == []
    assert "not checked" in out.getvalue()


# skopeo: the configured resolver, or where the registry resolver hands over.

def skopeo_inspect(fp, pinned: str, config: bytes | None = None, **answer) -> None:
    fp.register(["skopeo", "--registries-conf", fp.any(min=1, max=1), "inspect", "--config", f"docker://{pinned}"],
                stdout=(config or b"").decode(), **answer)


def test_the_skopeo_resolver_reads_the_config_with_skopeo(fake, read, fp):
    pinned = [f"{fake.host}/org/app@sha256:{digit * 64}" for digit in "12"]
    skopeo_inspect(fp, pinned[0], config_blob("3.1"))
    skopeo_inspect(fp, pinned[1], returncode=1, stderr='time="…" level=fatal msg="manifest unknown"')
    assert read(pinned + pinned[:1], RESOLVER="skopeo") == {pinned[0]: "3.1"}
    assert fake.requests == []


def test_a_fallback_reason_reads_with_skopeo(fake, images, read, fp, tmp_path, out):
    pinned = f"{fake.host}/org/app@{images.image(config_blob('1.0'))}"
    (tmp_path / "registries.conf").write_text(f'[[registry]]\nprefix = "{fake.host}/org"\nlocation = "{fake.host}/org"\n'
                                              f'[[registry.mirror]]\nlocation = "mirror.example/org"\n')
    skopeo_inspect(fp, pinned, config_blob("1.0-mirrored"))
    assert read([pinned]) == {pinned: "1.0-mirrored"}
    assert fake.requests == []
    assert f"{pinned}: falling back to skopeo because" in out.getvalue()


def test_without_the_fallback_a_fallback_reason_leaves_the_version_out(fake, images, read, fp, tmp_path, out):
    pinned = f"{fake.host}/org/app@{images.image(config_blob('1.0'))}"
    fake.documents[digest_of(b"{}")] = ("application/vnd.docker.distribution.manifest.v1+prettyjws", b"{}")
    schema1 = f"{fake.host}/org/app@{digest_of(b'{}')}"
    assert read([pinned, schema1], REGISTRY_FALLBACK="false") == {pinned: "1.0"}
    assert "manifest type application/vnd.docker.distribution.manifest.v1+prettyjws" in out.getvalue()
    assert "REGISTRY_FALLBACK is off" in out.getvalue()


def test_nothing_to_read_starts_nothing(read, fake):
    assert read([]) == {}
    assert fake.requests == []


def test_machine_platform_names_architectures_as_images_do(monkeypatch):
    for machine, expected in [("x86_64", ("amd64", None)), ("aarch64", ("arm64", None)), ("armv7l", ("arm", "v7"))]:
        monkeypatch.setattr(versions.platform, "machine", lambda: machine)
        assert versions.machine_platform() == expected


def test_config_blob_shape_is_formatted_like_inspect_output():
    from cipug.programs.containers import image_version

    assert image_version(json.loads(config_blob("1.2.3"))) == "1.2.3"
    assert image_version(json.loads(config_blob())) == "built 2026-11-30 12:00:00"
    assert image_version({"config": {"Labels": {"org.opencontainers.image.version": "1.0\x1b[31m"}},
                          "created": "2026-01-02T03:04:05Z"}) == "built 2026-01-02 03:04:05"
    assert image_version({"config": None, "created": None}) is None
