"""Image references and digests."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_valid_digest(digest: object) -> bool:
    """True for `sha256:` followed by 64 lowercase hex digits, nothing else."""
    return isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None


class Resolution(NamedTuple):
    """What a tag resolved to: the repository as skopeo names it (`name`) and the manifest `digest`."""

    name: str
    digest: str

    @property
    def pinned(self) -> str:
        """The reference written to *_IMAGE_HASHED: `docker.io/library/nextcloud@sha256:…`."""
        return f"{self.name}@{self.digest}"


# Looks a tagged reference up; raises CipugError when it cannot.
Resolver = Callable[[str], Resolution]


# The grammar docker and skopeo (containers/image docker/reference) accept. Tags and domains are
# ASCII-only, hence re.ASCII for \w.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
# `docker://`, `https://`: a transport or URL prefix, which skopeo and docker would read as part of the name.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# containers/image limits the whole name, domain included.
_NAME_MAX = 255

DOCKER_HUB = "docker.io"
_DOCKER_HUB_LEGACY = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"


class Reference(NamedTuple):
    """A normalised image reference: `nextcloud` is registry docker.io, repository library/nextcloud,
    tag latest; `digest` is set when the reference carries `@sha256:…`."""

    registry: str
    repository: str
    tag: str
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository as skopeo's `Name` shows it: `docker.io/library/nextcloud`."""
        return f"{self.registry}/{self.repository}"


def parse_reference(text: str) -> Reference:
    """Normalise `text` the way docker and skopeo do; ValueError says why it is not a reference.

    A reference with both a tag and a digest keeps both; the digest is what it points at.
    """
    if not text:
        raise ValueError("the reference is empty")
    scheme = _SCHEME.match(text)
    if scheme:
        raise ValueError(f"it starts with {scheme.group()!r}: write the reference without a transport or URL prefix")
    if _IDENTIFIER.fullmatch(text):
        raise ValueError("a bare 64-character hex string is an image ID, not a repository name")
    remainder, at, digest = text.partition("@")
    if at:
        if not is_valid_digest(digest):
            raise ValueError(f"digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    tag = None
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r} is not valid (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')")
    registry, repository = _split_registry(remainder)
    if not _DOMAIN.fullmatch(registry):
        raise ValueError(f"registry {registry!r} is not a valid host[:port]")
    if not _PATH.fullmatch(repository):
        if _PATH.fullmatch(repository.lower()):
            raise ValueError(f"repository name {repository!r} must be lowercase")
        raise ValueError(
            f"repository name {repository!r} is not valid (lowercase letters and digits, "
            "separated by '/', '.', '_', '__' or dashes)"
        )
    if registry == DOCKER_HUB and "/" not in repository:
        repository = _OFFICIAL_PREFIX + repository
    if len(registry) + 1 + len(repository) > _NAME_MAX:
        raise ValueError(f"the name is longer than {_NAME_MAX} characters")
    return Reference(registry, repository, tag or DEFAULT_TAG, digest or None)


def _split_registry(name: str) -> tuple[str, str]:
    """Registry and repository path (before docker.io's `library/`) of a name without tag or digest."""
    first, slash, rest = name.partition("/")
    # Only a first component that looks like a host names a registry; `org/app` is on Docker Hub.
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == _DOCKER_HUB_LEGACY:
        registry = DOCKER_HUB
    return registry, repository
