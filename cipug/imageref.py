"""Image references and digests."""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def is_valid_digest(digest: object) -> bool:
    """True for `sha256:` followed by 64 lowercase hex digits, nothing else."""
    return isinstance(digest, str) and DIGEST_RE.fullmatch(digest) is not None


@dataclass(frozen=True)
class Resolution:
    """What a tag resolved to: the repository as skopeo names it and the manifest digest."""

    name: str
    digest: str

    @property
    def pinned(self) -> str:
        """The reference written to *_IMAGE_HASHED: `docker.io/library/nextcloud@sha256:…`."""
        return f"{self.name}@{self.digest}"
