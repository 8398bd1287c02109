"""Looking tags up with `skopeo inspect`.

Imported only when something has to be looked up: its imports (re, json) cost more start-up time
than the timer's whole run on a warm cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from . import errors
from .commands import last_line, run
from .errors import CipugError
from .imageref import Resolution, is_valid_digest

# resolve defines Resolver for type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .resolve import Resolver

# skopeo logs fatal errors as `time="…" level=fatal msg="…"`; the msg part is what a user needs.
_SKOPEO_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# skopeo's Name is written into .env unquoted: allow only what a repository name can hold.
_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)+")


def _skopeo_error(reference: str, stderr: str) -> str:
    line = last_line(stderr)
    match = _SKOPEO_MESSAGE.search(line)
    return f"{reference} could not be resolved: {match.group(1) if match else line}"


def parse_inspect_output(reference: str, stdout: str) -> Resolution:
    """Name and Digest from `skopeo inspect` JSON, both checked before anything uses them."""
    try:
        data = json.loads(stdout)
        name, digest = data["Name"], data["Digest"]
    except (ValueError, KeyError, TypeError):
        raise CipugError(f"{reference}: skopeo printed no Name and Digest", errors.RESOLVE_FAILED) from None
    if not is_valid_digest(digest):
        raise CipugError(f"{reference}: skopeo reported an invalid digest {digest!r}", errors.RESOLVE_FAILED)
    if not isinstance(name, str) or not _REPOSITORY_NAME.fullmatch(name):
        raise CipugError(f"{reference}: skopeo reported an invalid repository name {name!r}", errors.RESOLVE_FAILED)
    return Resolution(name, digest)


def skopeo_resolver(skopeo: Sequence[str], timeout: float) -> Resolver:
    def resolve(reference: str) -> Resolution:
        import subprocess

        argv = [*skopeo, "inspect", "--no-tags", f"docker://{reference}"]
        try:
            result = run(argv, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CipugError(f"{reference} could not be resolved: skopeo took longer than {timeout:g} s",
                             errors.RESOLVE_FAILED) from None
        if result.returncode != 0:
            raise CipugError(_skopeo_error(reference, result.stderr), errors.RESOLVE_FAILED)
        return parse_inspect_output(reference, result.stdout)

    return resolve
