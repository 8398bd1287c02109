"""Image references normalised as docker and skopeo do, and the Resolution type."""

from __future__ import annotations

import pytest

from cipug.lookup.references import Reference, Resolution, is_valid_digest, parse_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("text, registry, repository, tag, name", [
    ("nextcloud", "docker.io", "library/nextcloud", "latest", "docker.io/library/nextcloud"),
    ("nextcloud:28-apache", "docker.io", "library/nextcloud", "28-apache", "docker.io/library/nextcloud"),
    ("docker.io/nextcloud", "docker.io", "library/nextcloud", "latest", "docker.io/library/nextcloud"),
    ("docker.io/library/nextcloud:28", "docker.io", "library/nextcloud", "28", "docker.io/library/nextcloud"),
    ("index.docker.io/nextcloud", "docker.io", "library/nextcloud", "latest", "docker.io/library/nextcloud"),
    ("index.docker.io/org/app:1", "docker.io", "org/app", "1", "docker.io/org/app"),
    ("org/app", "docker.io", "org/app", "latest", "docker.io/org/app"),
    ("org/group/app:v1.2", "docker.io", "org/group/app", "v1.2", "docker.io/org/group/app"),
    ("ghcr.io/org/app", "ghcr.io", "org/app", "latest", "ghcr.io/org/app"),
    ("ghcr.io/app:v1", "ghcr.io", "app", "v1", "ghcr.io/app"),
    ("localhost/app", "localhost", "app", "latest", "localhost/app"),
    ("localhost:5000/app", "localhost:5000", "app", "latest", "localhost:5000/app"),
    ("127.0.0.1:5000/demo/app:latest", "127.0.0.1:5000", "demo/app", "latest", "127.0.0.1:5000/demo/app"),
    ("registry:5000/app", "registry:5000", "app", "latest", "registry:5000/app"),
    ("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", "[::1]:5000/app"),
    ("Registry.Example.com/app", "Registry.Example.com", "app", "latest", "Registry.Example.com/app"),
    ("quay.io/a-b__c.d_e/f---g:V_1.x-Y", "quay.io", "a-b__c.d_e/f---g", "V_1.x-Y", "quay.io/a-b__c.d_e/f---g"),
    # Without a slash a host:port is read as name:tag, like docker does.
    ("localhost:5000", "docker.io", "library/localhost", "5000", "docker.io/library/localhost"),
])
def test_normalisation(text, registry, repository, tag, name):
    reference = parse_reference(text)
    assert reference == Reference(registry, repository, tag, None)
    assert reference.name == name


def test_digest_is_kept_with_or_without_tag():
    assert parse_reference(f"nextcloud@{DIGEST}") == Reference("docker.io", "library/nextcloud", "latest", DIGEST)
    assert parse_reference(f"ghcr.io/org/app:v1@{DIGEST}") == Reference("ghcr.io", "org/app", "v1", DIGEST)


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("Nextcloud", "repository name 'Nextcloud' must be lowercase"),
    ("Org/app", "repository name 'Org/app' must be lowercase"),
    ("ghcr.io/Org/app", "repository name 'Org/app' must be lowercase"),
    ("0123456789abcdef" * 4, "image ID"),
    ("app:", "tag '' is not valid"),
    ("app:-x", "tag '-x' is not valid"),
    ("app:.x", "tag '.x' is not valid"),
    ("app:" + "x" * 129, "is not valid"),
    ("app:tä", "tag 'tä' is not valid"),
    ("app@sha256:abc", "digest 'sha256:abc' is not sha256"),
    (f"app@{DIGEST.upper()}", "is not sha256"),
    ("app@sha512:" + "a" * 128, "is not sha256"),
    (f"app@{DIGEST}@{DIGEST}", "is not sha256"),
    ("a//b", "repository name 'a//b' is not valid"),
    ("ghcr.io/", "repository name '' is not valid"),
    ("-app", "is not valid"),
    ("app-", "is not valid"),
    ("a...b", "is not valid"),
    ("a b", "is not valid"),
    (" nextcloud", "is not valid"),
    ("bad_host.example:port/app", "registry 'bad_host.example:port' is not a valid host"),
    ("-bad.example/app", "is not a valid host"),
    ("ghcr.io/" + "a" * 250, "longer than 255"),
])
def test_invalid_references(text, reason):
    with pytest.raises(ValueError) as raised:
        parse_reference(text)
    assert reason in str(raised.value)


def test_name_of_255_characters_is_accepted():
    assert len(parse_reference("ghcr.io/" + "a" * 247).name) == 255


def test_is_valid_digest():
    assert is_valid_digest(DIGEST)
    assert is_valid_digest("sha256:" + "f" * 64)


@pytest.mark.parametrize("digest", [
    DIGEST.upper(), "SHA256:" + DIGEST[7:], DIGEST[:-1], DIGEST + "0", DIGEST + "\n", " " + DIGEST,
    "sha512:" + DIGEST[7:], "sha256:" + "g" * 64, "sha256:" + "\u0663" * 64, "sha256-" + DIGEST[7:],
    DIGEST[7:], "", None, DIGEST.encode(),
])
def test_invalid_digests(digest):
    assert not is_valid_digest(digest)


def test_resolution_pinned():
    assert Resolution("docker.io/library/nextcloud", DIGEST).pinned == f"docker.io/library/nextcloud@{DIGEST}"
