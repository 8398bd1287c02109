"""Image references and digests."""

from __future__ import annotations

import re

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def is_valid_digest(digest: object) -> bool:
    """True for `sha256:` followed by 64 lowercase hex digits, nothing else."""
    return isinstance(digest, str) and DIGEST_RE.fullmatch(digest) is not None
