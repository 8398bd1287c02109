"""The versions of images that are not pulled yet, read from their registries (`cipug check` pulls nothing).

An image's version is its `org.opencontainers.image.version` label, else its creation time, both in
its config blob. With the registry resolver that is three GETs at most, each checked against its
digest: the manifest, for a list or index the manifest for this machine's platform, then the config
blob. Where the resolver would hand a reference to skopeo (registries.conf, credential helpers, …),
and with RESOLVER=skopeo, `skopeo inspect --config` reads it instead.

On Docker Hub a manifest GET counts as a pull, unlike the resolver's HEAD: only new digests are read.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import CipugError
from ..log import Log
from ..programs.containers import image_version
from ..programs.process import Runner
from ..settings import Settings
from .references import parse_reference
from .resolve import bounded, in_parallel, registry_resolver, report_lookups
from .skopeo import skopeo_config

if TYPE_CHECKING:
    from .registry import Fetch

_LISTS = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
# Python's machine names -> GOARCH and variant, as container images name platforms.
_ARCHITECTURES = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


class _Unreadable(Exception):
    """The registry's documents do not lead to an image config."""


def registry_versions(settings: Settings, log: Log, pinned: Iterable[str]) -> dict[str, str]:
    """pinned reference (name@sha256:...) -> version, read from the registry; a reference whose version
    cannot be read is left out (logged at VERBOSITY 2 via log.verbose).

    Each reference is read once; REGISTRY_WORKERS at a time (skopeo: RESOLVE_WORKERS), through the
    registry resolver's authentication, rate-limit handling and fallback rules.
    """
    references = list(dict.fromkeys(pinned))
    if not references:
        return {}
    skopeo = skopeo_config(settings.skopeo_tool, settings.registry_timeout, Runner(log))
    if settings.resolver == "skopeo":
        return _versions(references, skopeo, settings.resolve_workers, log)
    resolver = registry_resolver(settings, log, None)
    resolver.expect(references, pinned=True)
    fallback = bounded(skopeo, settings.resolve_workers) if settings.registry_fallback else None

    def read(reference: str) -> dict[str, Any]:
        return resolver.read(reference, functools.partial(_config, reference), fallback)

    try:
        return _versions(references, read, settings.registry_workers, log)
    finally:
        resolver.close()
        report_lookups(resolver.report(), log)


def _versions(references: list[str], read: Callable[[str], dict[str, Any]], workers: int,
              log: Log) -> dict[str, str]:
    def version(reference: str) -> str | None:
        try:
            config = read(reference)
        except CipugError as error:
            log.verbose(f"{reference}: version not known: {error.message}")
            return None
        except _Unreadable as problem:
            log.verbose(f"{reference}: version not known: {problem}")
            return None
        found = image_version(config)
        if found is None:
            log.verbose(f"{reference}: version not known: the image has no version label and no creation time")
        return found

    return {reference: found for reference, found in zip(references, in_parallel(references, version, workers))
            if found}


def _config(reference: str, fetch: Fetch) -> dict[str, Any]:
    """The image config of a pinned reference, from its manifest (for a list or index, this platform's)."""
    digest = parse_reference(reference).digest
    assert digest is not None  # RegistryResolver.read takes pinned references only
    media_type, body = fetch("manifests", digest)
    manifest = _json(body, "manifest")
    if media_type in _LISTS:
        digest = _platform_manifest(manifest)
        media_type, body = fetch("manifests", digest)
        if media_type in _LISTS:
            raise _Unreadable(f"the list's manifest {digest} for this platform is a list itself")
        manifest = _json(body, "manifest")
    config = manifest.get("config")
    config_digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(config_digest, str):
        raise _Unreadable("the manifest names no config blob")
    _, blob = fetch("blobs", config_digest)
    return _json(blob, "image config")


def _platform_manifest(index: dict[str, Any]) -> str:
    """The digest the container tool would pull from a list or index: this machine's platform, else the
    first linux one."""
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)
               and isinstance(entry.get("platform"), dict) and entry["platform"].get("os") == "linux"
               and isinstance(entry.get("digest"), str)]
    architecture, variant = machine_platform()
    same = [entry for entry in entries if entry["platform"].get("architecture") == architecture]
    exact = [entry for entry in same if entry["platform"].get("variant") in (variant, None)]
    for candidates in (exact, same, entries):
        if candidates:
            digest: str = candidates[0]["digest"]
            return digest
    raise _Unreadable("the list names no linux image")


def machine_platform() -> tuple[str, str | None]:
    """This machine's architecture as images name it (GOARCH: amd64, arm64, arm, …) and its variant (v7) or None."""
    machine = platform.machine().lower()
    return _ARCHITECTURES.get(machine, (machine, None))


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _Unreadable(f"the {what} is not a JSON object")
    return data
