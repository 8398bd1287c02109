"""Looking tags up with `skopeo inspect`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CipugError, ExitCode
from ..programs.process import Runner, last_line
from .references import Resolution, Resolver, is_valid_digest

# skopeo logs fatal errors as `time="…" level=fatal msg="…"`; the msg part is what a user needs.
_SKOPEO_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# skopeo's Name is written into .env unquoted: allow only what a repository name can hold.
_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)+")


def _skopeo_error(reference: str, done: str, stderr: str) -> str:
    line = last_line(stderr)
    match = _SKOPEO_MESSAGE.search(line)
    return f"{reference} could not be {done}: {match.group(1) if match else line}"


def parse_inspect_output(reference: str, stdout: str) -> Resolution:
    """Name and Digest from `skopeo inspect` JSON, both checked before anything uses them."""
    try:
        data = json.loads(stdout)
        name, digest = data["Name"], data["Digest"]
    except (ValueError, KeyError, TypeError):
        raise CipugError(f"{reference}: skopeo printed no Name and Digest", ExitCode.RESOLVE_FAILED) from None
    if not is_valid_digest(digest):
        raise CipugError(f"{reference}: skopeo reported an invalid digest {digest!r}", ExitCode.RESOLVE_FAILED)
    if not isinstance(name, str) or not _REPOSITORY_NAME.fullmatch(name):
        raise CipugError(f"{reference}: skopeo reported an invalid repository name {name!r}", ExitCode.RESOLVE_FAILED)
    return Resolution(name, digest)


def _inspect(skopeo: Sequence[str], timeout: float, runner: Runner, reference: str, option: str, done: str) -> str:
    """What `skopeo inspect OPTION docker://REFERENCE` prints; CipugError(RESOLVE_FAILED) saying why not."""
    argv = [*skopeo, "inspect", option, f"docker://{reference}"]
    try:
        result = runner.run(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CipugError(f"{reference} could not be {done}: skopeo took longer than {timeout:g} s",
                         ExitCode.RESOLVE_FAILED) from None
    if result.returncode != 0:
        raise CipugError(_skopeo_error(reference, done, result.stderr), ExitCode.RESOLVE_FAILED)
    return result.stdout


def skopeo_resolver(skopeo: Sequence[str], timeout: float, runner: Runner) -> Resolver:
    def resolve(reference: str) -> Resolution:
        return parse_inspect_output(reference, _inspect(skopeo, timeout, runner, reference, "--no-tags", "resolved"))

    return resolve


def skopeo_config(skopeo: Sequence[str], timeout: float, runner: Runner) -> Callable[[str], dict[str, Any]]:
    """An image's config (`skopeo inspect --config`: `created`, `config.Labels`, …) by its reference."""
    def config(reference: str) -> dict[str, Any]:
        try:
            data = json.loads(_inspect(skopeo, timeout, runner, reference, "--config", "read"))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CipugError(f"{reference}: skopeo printed no image config", ExitCode.RESOLVE_FAILED)
        return data

    return config
