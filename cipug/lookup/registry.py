"""The registry resolver: a tag's digest from an HTTP HEAD request, which Docker Hub does not count as a pull.

It answers exactly what `skopeo inspect` reports as Name and Digest, or hands the
reference to the fallback (skopeo) when it cannot be sure to:

- registries.conf (as skopeo reads it, see registries_conf.py) configures a mirror, a
  rewrite or a block that applies to the reference, or cannot be read;
- a credential helper (`credHelpers`, or `credsStore` holding the login) or an
  identity token is configured for the registry, or an auth file cannot be read;
- a registry not in REGISTRY_INSECURE_HOSTS fails TLS (untrusted certificate,
  or a plain-HTTP registry);
- the answer has no valid `Docker-Content-Digest`, an unexpected manifest type,
  an authentication challenge it cannot meet, or any status but 200, 401, 404, 429.

Some answers are final, because skopeo would only repeat them at the cost of
time (and, for Docker Hub, quota): an unknown tag (404), an unreachable
registry (connection refused, unknown host), a registry that does not answer
within REGISTRY_TIMEOUT, and rate limiting. A 429 is the pull limit when its
body says so (Docker Hub's `toomanyrequests: You have reached your pull rate
limit…`) or `ratelimit-remaining` is 0: that registry is sent nothing more in
the run, and its other references fail as "not checked". Another 429 (an abuse
limit) is retried once when Retry-After asks for at most RETRY_AFTER_MAX seconds.

Round trips: the first lookup on a registry runs alone, so the others learn its
authentication (and any 429) from it. A bearer token is asked for all of the
run's repositories on the registry at once (repeated `scope=`, as Docker Hub
grants them); per repository instead when the token's `access` claim (a JWT's)
grants fewer, when the token service refuses the request, or when the registry
answers 401 to the shared token — from then on for that registry and run.
Idle connections are kept per host and reused.

The realm and service of a registry's Bearer challenge are remembered across
runs (challenges.py): an anonymous lookup asks that token service right away,
without the 401 first. A remembered realm is never sent credentials, an https
registry's must be https, and when it gives no token, or the registry answers
401 to its token, it is forgotten and the registry's own challenge met as
without it: a stale one costs one request, never a lookup.

`read()` fetches a pinned reference's manifests and blobs by digest (GET, the same
authentication, rate-limit and fallback rules), each checked against its digest; a blob
answered with a redirect is fetched there, without the Authorization header when the
redirect leaves the registry's host.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, cast

from .. import __version__
from ..errors import CipugError, ExitCode
from ..log import Log
from .challenges import Challenges
from .ratelimits import LookupReport, RateLimit, lower, parse_rate_limit
from .references import DOCKER_HUB, Reference, Resolution, is_valid_digest, parse_reference
from .registries_conf import RegistriesConf

# Asking for lists and indexes too makes a multi-arch tag answer with the list's
# digest, which is what skopeo reports.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_ACCEPT = ", ".join(MANIFEST_TYPES)
_USER_AGENT = f"cipug/{__version__}"
_DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
# A 429 is retried once when Retry-After asks for at most this many seconds.
RETRY_AFTER_MAX = 5.0
# Tokens, manifests and image configs are small; registries refuse manifests over 4 MiB.
_BODY_MAX = 4 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_REDIRECTS_MAX = 5
# A token request names at most this many characters of scopes (50 repositories take about 2000).
_SCOPES_QUERY_MAX = 6000
# Host names under which auth files know Docker Hub.
_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


T = TypeVar("T")
Credentials = tuple[str, str]
Kind = Literal["manifests", "blobs"]
# (kind, digest) -> (media type, body): a manifest or blob of one repository, checked against its digest.
Fetch = Callable[[Kind, str], tuple[str, bytes]]


class _Fallback(Exception):
    """Something the resolver cannot do faithfully: skopeo should answer."""


class _Failed(Exception):
    """A final answer for the reference: skopeo would say the same."""


class _NotChecked(_Failed):
    """The registry answered a pull-limit 429 to an earlier lookup: it is sent nothing more this run."""


@dataclass
class _TokenSlot:
    # One lock per scope: threads asking for the same repository wait for one token request.
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str | None = None


@dataclass
class _Grant:
    """A token asked for several repositories' pull scopes at once, and what it turned out to grant."""

    scopes: tuple[str, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str | None = None
    granted: frozenset[str] | None = None  # from the token's `access` claim; None: not a JWT, unknown
    failed: bool = False


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


@dataclass(frozen=True)
class _AuthFile:
    path: Path
    legacy: bool
    data: object = None
    problem: str = ""


class _DeadlineReader(io.RawIOBase):
    """Socket reads that must all finish by a deadline, so a trickling server cannot stretch a request."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What HTTPResponse needs of a socket: makefile, here reading under a deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


def _deadline_response(deadline: float) -> type[http.client.HTTPResponse]:
    """An HTTPResponse class whose reads must all be done by `deadline`."""

    class DeadlineResponse(http.client.HTTPResponse):
        def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                     url: str | None = None) -> None:
            # HTTPResponse only calls makefile() on its socket.
            super().__init__(cast(socket.socket, _DeadlineSocket(sock, deadline)), debuglevel, method, url)

    return DeadlineResponse


class RegistryResolver:
    """Resolves tags with HEAD requests; safe to call from several threads at once.

    `expect()` names the references a run will look up, so that one token can cover all of a
    registry's repositories. The first lookup on each registry runs alone: it learns how the
    registry authenticates (and whether it is rate limiting) before the others send anything.
    """

    def __init__(
        self,
        insecure_hosts: Iterable[str],
        timeout: float,
        log: Log,
        fallback: Callable[[str], Resolution] | None,
        registries_conf: RegistriesConf | None = None,
        challenges: Challenges | None = None,
    ) -> None:
        self._insecure = frozenset(host.lower() for host in insecure_hosts)
        self._timeout = timeout
        self._log = log
        self._fallback = fallback
        # None: not consulted (the caller, make_lookups, passes what skopeo would read).
        self._registries_conf = registries_conf
        # Loading the CA certificates takes tens of milliseconds: only when https is needed.
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._tokens: dict[tuple[str, str, str], _TokenSlot] = {}
        # One token for several repositories: by realm, service and credentials.
        self._grants: dict[tuple[str, str, Credentials | None], _Grant] = {}
        # Registries whose token service did not grant several repositories at once.
        self._per_repository: set[str] = set()
        self._expected: dict[str, set[str]] = {}
        self._gates: dict[str, threading.Event] = {}
        # What each registry asked for, so the next repository sends it right away.
        self._bearer: dict[str, tuple[str, str]] = {}
        self._basic: set[str] = set()
        # What earlier runs' challenges said, for anonymous lookups; None: nothing remembered or learnt.
        self._challenges = challenges
        self._auth_files: list[_AuthFile] | None = None
        # Why each reference handed to the fallback could not be answered here.
        self.fallbacks: dict[str, str] = {}
        # By registry: the lowest remaining budget it told, and those that answered a pull-limit 429.
        self.rate_limits: dict[str, RateLimit] = {}
        self.stopped: dict[str, float | None] = {}
        self._stop_reasons: dict[str, str] = {}

    def expect(self, references: Iterable[str], *, pinned: bool = False) -> None:
        """The references this run will look up (`pinned`: read by digest): their repositories share a
        token where the registry allows."""
        for reference in references:
            try:
                ref = parse_reference(reference)
            except ValueError:
                continue
            # resolve() sends nothing for a reference that carries a digest; read() does.
            if pinned or not ref.digest:
                with self._lock:
                    self._expected.setdefault(ref.registry, set()).add(ref.repository)

    def report(self) -> LookupReport:
        with self._lock:
            return LookupReport(dict(self.rate_limits), dict(self.stopped), dict(self.fallbacks))

    def __call__(self, reference: str) -> Resolution:
        return self.resolve(reference)

    def resolve(self, reference: str) -> Resolution:
        """The Name and Digest skopeo would report; CipugError(RESOLVE_FAILED) when there is none."""
        ref = _parse(reference)
        if ref.digest:
            return Resolution(ref.name, ref.digest)
        return self._answer(ref, reference, "resolved", self._head, self._fallback)

    def read(self, reference: str, reader: Callable[[Fetch], T], fallback: Callable[[str], T] | None) -> T:
        """What `reader` makes of the documents of a pinned reference (`name@sha256:…`), fetched by digest.

        `fallback` (skopeo) answers where the registry cannot be read faithfully; CipugError(RESOLVE_FAILED)
        when nothing can answer.
        """
        ref = _parse(reference)
        if not ref.digest:
            raise CipugError(f"{reference} is not pinned by digest", ExitCode.RESOLVE_FAILED)

        def action(ref: Reference, credentials: Credentials | None) -> T:
            return reader(functools.partial(self._fetch, ref, credentials))

        return self._answer(ref, reference, "read", action, fallback)

    def keep_stopped(self, stopped: Mapping[str, float | None]) -> None:
        """Registries stopped earlier in the run (a pull-limit 429 to another resolver): they are sent nothing."""
        with self._lock:
            for registry, until in stopped.items():
                self.stopped.setdefault(registry, until)
                self._stop_reasons.setdefault(
                    registry, f"registry {registry} answered a pull-limit 429 earlier in this run; nothing more is "
                              "sent to it")

    def close(self) -> None:
        """Close the connections kept open for later requests; save the challenges learnt."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
        if self._challenges is not None:
            self._challenges.save()

    # The manifest request and its authentication.

    def _answer(self, ref: Reference, written: str, done: str,
                action: Callable[[Reference, Credentials | None], T], fallback: Callable[[str], T] | None) -> T:
        """`action`'s answer for `ref`, else the fallback's where it cannot be faithful; CipugError(RESOLVE_FAILED)."""
        try:
            return self._lookup(ref, written, action)
        except _NotChecked as stopped:
            raise CipugError(f"{written}: not checked: {stopped}", ExitCode.RESOLVE_FAILED) from None
        except _Failed as failure:
            raise CipugError(f"{written} could not be {done}: {failure}", ExitCode.RESOLVE_FAILED) from None
        except _Fallback as cannot:
            reason = str(cannot)
        if fallback is None:
            raise CipugError(f"{written} could not be {done}: {reason} (REGISTRY_FALLBACK is off)",
                             ExitCode.RESOLVE_FAILED)
        with self._lock:
            self.fallbacks[written] = reason
        self._log.verbose(f"{written}: falling back to skopeo because {reason}")
        return fallback(written)

    def _lookup(self, ref: Reference, written: str, action: Callable[[Reference, Credentials | None], T]) -> T:
        self._check_stopped(ref.registry)
        if self._registries_conf is not None:
            reason = self._registries_conf.reason(ref, written)
            if reason:
                raise _Fallback(reason)
        credentials = self._credentials(ref)
        with self._lock:
            gate = self._gates.get(ref.registry)
            first = gate is None
            if gate is None:
                gate = self._gates[ref.registry] = threading.Event()
        if first:
            try:
                return action(ref, credentials)
            finally:
                gate.set()
        if not gate.is_set():
            self._preconnect(self._scheme(ref), _endpoint(ref))
        # Bounded: the first lookup makes at most four requests, each within the timeout, and one wait
        # (a read's first can take longer: the others then go ahead without its answer).
        gate.wait(4 * self._timeout + RETRY_AFTER_MAX)
        return action(ref, credentials)

    def _preconnect(self, scheme: str, host: str) -> None:
        """Open a connection for later while the first lookup authenticates: its TCP and TLS round trips
        overlap the challenge and token ones. Sends no request; a failure is left for the request to meet."""
        connection = self._connection(scheme, host)
        try:
            connection.connect()
        except OSError:
            connection.close()
            return
        with self._lock:
            self._idle.setdefault((scheme, host), []).append(connection)

    def _head(self, ref: Reference, credentials: Credentials | None) -> Resolution:
        answer = self._authorized(ref, credentials, "HEAD", f"/v2/{ref.repository}/manifests/{ref.tag}", _ACCEPT,
                                  f"tag {ref.tag}")
        return self._resolution(ref, _endpoint(ref), answer)

    def _fetch(self, ref: Reference, credentials: Credentials | None, kind: Kind, digest: str) -> tuple[str, bytes]:
        """A manifest or blob of `ref`'s repository by digest: its media type and body, checked against the digest."""
        if not is_valid_digest(digest):
            # Also keeps what a manifest names out of the request's path.
            raise _Failed(f"{digest!r} is not a sha256 digest")
        host = _endpoint(ref)
        target = f"/v2/{ref.repository}/{kind}/{digest}"
        what = f"{kind[:-1]} {digest}"
        if kind == "manifests":
            answer = self._authorized(ref, credentials, "GET", target, _ACCEPT, what)
        else:
            answer = self._authorized(ref, credentials, "GET", target, None, what, _REDIRECTS)
            host, answer = self._follow(ref, credentials, host, target, answer, what)
        media_type = _media_type(answer)
        if kind == "manifests" and media_type not in MANIFEST_TYPES:
            raise _Fallback(f"{host} answered with manifest type {media_type or 'none'}")
        if "sha256:" + hashlib.sha256(answer.body).hexdigest() != digest:
            raise _Failed(f"{host} sent a {kind[:-1]} whose sha256 is not its digest {digest}: refused")
        return media_type, answer.body

    def _follow(self, ref: Reference, credentials: Credentials | None, host: str, target: str, answer: _Answer,
                what: str) -> tuple[str, _Answer]:
        """The answer at the end of a blob's redirects, and its host; credentials stay on the registry's host."""
        scheme = self._scheme(ref)
        registry_host = (scheme, host.lower())
        for _ in range(_REDIRECTS_MAX):
            if answer.status not in _REDIRECTS:
                if answer.status == 404:
                    raise _Failed(f"{what} not found at {host}")
                if answer.status != 200:
                    raise _Fallback(f"{host} answered HTTP {answer.status} {answer.reason}".rstrip())
                return host, answer
            location = answer.headers.get("Location")
            if not location:
                raise _Fallback(f"{host} answered HTTP {answer.status} without a Location")
            url = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{target}", location))
            if url.scheme not in ("http", "https") or not url.netloc:
                raise _Fallback(f"{host} redirected to {location!r}, not an http(s) URL")
            if url.scheme == "http" and url.netloc.lower() not in self._insecure:
                raise _Fallback(f"{host} redirected to plain HTTP and {url.netloc} is not in REGISTRY_INSECURE_HOSTS")
            scheme, host, target = url.scheme, url.netloc, (url.path or "/") + (f"?{url.query}" if url.query else "")
            headers = {"User-Agent": _USER_AGENT}
            authorization = self._known_authorization(ref, credentials) if (scheme, host.lower()) == registry_host \
                else None
            if authorization:
                headers["Authorization"] = authorization
            self._check_stopped(ref.registry)
            answer = self._request("GET", scheme, host, target, headers)
        raise _Fallback(f"{host} redirected more than {_REDIRECTS_MAX} times")

    def _authorized(self, ref: Reference, credentials: Credentials | None, method: str, target: str,
                    accept: str | None, what: str, also: Sequence[int] = ()) -> _Answer:
        """A request to `ref`'s registry, authenticated as it asks: its 200 (or `also`) answer; `what` names
        what a 404 did not find."""
        scheme, host = self._scheme(ref), _endpoint(ref)
        authorization = self._known_authorization(ref, credentials)
        challenged = rate_limited = shared_refused = False
        while True:
            self._check_stopped(ref.registry)
            headers = {"User-Agent": _USER_AGENT}
            if accept:
                headers["Accept"] = accept
            if authorization:
                headers["Authorization"] = authorization
            answer = self._request(method, scheme, host, target, headers)
            self._note_rate_limit(ref.registry, answer)
            if answer.status == 200 or answer.status in also:
                return answer
            if answer.status == 401 and not challenged:
                challenged = True
                authorization = self._meet_challenge(ref, host, answer, credentials, authorization)
                continue
            if answer.status == 401 and not shared_refused and self._is_shared(authorization):
                # The token for several repositories does not cover this one: once more with its own.
                shared_refused = True
                authorization = self._meet_challenge(ref, host, answer, credentials, authorization)
                continue
            if answer.status == 401:
                raise _Fallback(f"{host} still answers 401 Unauthorized after authenticating")
            if answer.status == 404:
                raise _Failed(f"{what} not found in registry {ref.registry} (repository {ref.repository})")
            if answer.status == 429:
                wait = self._rate_limited(ref.registry, answer)
                if not rate_limited and wait is not None and wait <= RETRY_AFTER_MAX:
                    rate_limited = True
                    time.sleep(wait)
                    continue
                later = "" if wait is None else f"; it asks to retry after {wait:.0f} s"
                raise _Failed(f"registry {ref.registry} is rate limiting requests (HTTP 429{later})")
            raise _Fallback(f"{host} answered HTTP {answer.status} {answer.reason}".rstrip())

    def _scheme(self, ref: Reference) -> str:
        return "http" if ref.registry.lower() in self._insecure else "https"

    def _resolution(self, ref: Reference, host: str, answer: _Answer) -> Resolution:
        digest = answer.headers.get("Docker-Content-Digest")
        if digest is None:
            raise _Fallback(f"{host} sent no Docker-Content-Digest header")
        if not is_valid_digest(digest):
            raise _Fallback(f"{host} sent Docker-Content-Digest {digest!r}, not a sha256 digest")
        media_type = _media_type(answer)
        # Another type (an old schema 1 manifest) may have a digest skopeo reports differently.
        if media_type and media_type not in MANIFEST_TYPES:
            raise _Fallback(f"{host} answered with manifest type {media_type}")
        return Resolution(ref.name, digest)

    # Rate limits.

    def _note_rate_limit(self, registry: str, answer: _Answer) -> RateLimit | None:
        limit = parse_rate_limit(answer.headers)
        if limit is not None:
            with self._lock:
                self.rate_limits[registry] = lower(self.rate_limits.get(registry), limit)
        return limit

    def _rate_limited(self, registry: str, answer: _Answer) -> float | None:
        """A 429: the pull limit stops every lookup on the registry (_Failed); an abuse limit's wait is returned."""
        wait = _retry_after(answer.headers.get("Retry-After"))
        limit = parse_rate_limit(answer.headers)
        body = answer.body.lower()
        if not (b"pull rate limit" in body or b"toomanyrequests" in body or (limit and limit.remaining == 0)):
            return wait
        window = limit.window if limit else None
        until = time.time() + wait if wait is not None else time.time() + window if window else None
        when = "" if until is None else (
            " until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
            + (" at the latest (the rate limit's window)" if wait is None else ""))
        excerpt = answer.body[:200].decode("utf-8", "replace").strip()
        self._stop(registry, f"registry {registry} answered a pull-limit 429; nothing more is sent to it this run{when}",
                   until, f"pull rate limit reached (HTTP 429{': ' + excerpt if excerpt else ''}); ")
        raise _Failed(f"registry {registry} refused the lookup: pull rate limit reached (HTTP 429){when}")

    def _stop(self, registry: str, reason: str, until: float | None, why: str) -> None:
        """Send the registry nothing more this run; one warning line, the first time."""
        with self._lock:
            first = registry not in self.stopped
            if first:
                self.stopped[registry] = until
                self._stop_reasons[registry] = reason
        if first:
            when = "" if until is None else " until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
            self._log.warning(f"registry {registry}: {why or reason + '; '}its remaining references are not checked "
                              f"this run{when}")

    def _check_stopped(self, registry: str) -> None:
        with self._lock:
            reason = self._stop_reasons.get(registry)
        if reason:
            raise _NotChecked(reason)

    # Authentication.

    def _known_authorization(self, ref: Reference, credentials: Credentials | None) -> str | None:
        """Authenticate the first request as the registry asked before (in this run, else in an earlier one),
        saving a 401 round trip."""
        with self._lock:
            bearer = self._bearer.get(ref.registry)
            basic = ref.registry in self._basic
        if bearer:
            realm, service = bearer
            return "Bearer " + self._token(ref, realm, service, _pull_scope(ref), credentials, None)
        if basic:
            return _basic_authorization(credentials) if credentials else None
        # A realm from a file must not receive credentials: only the registry's own challenge may name it.
        return self._remembered_authorization(ref) if credentials is None else None

    def _remembered_authorization(self, ref: Reference) -> str | None:
        """A token from the token service an earlier run's challenge named; None when there is none to ask or it
        gives none (then forgotten): the request meets the registry's challenge as it would without it."""
        if self._challenges is None:
            return None
        remembered = self._challenges.get(ref.registry)
        if remembered is None:
            return None
        realm, service = remembered
        # What an https registry's own challenge says may lead to plain HTTP; what a file says may not.
        if self._scheme(ref) == "https" and urllib.parse.urlsplit(realm).scheme != "https":
            return None
        try:
            return "Bearer " + self._token(ref, realm, service, _pull_scope(ref), credentials=None, refused=None,
                                           tentative=True)
        except _NotChecked:
            raise
        except (_Fallback, _Failed) as failure:
            self._challenges.forget(ref.registry)
            self._log.verbose(f"registry {ref.registry}: the token service remembered from an earlier run gave no "
                              f"token ({failure}); meeting the registry's challenge instead")
            return None

    def _meet_challenge(
        self, ref: Reference, host: str, answer: _Answer, credentials: Credentials | None, refused: str | None
    ) -> str:
        """The Authorization header that answers a 401's WWW-Authenticate challenge."""
        challenges = _parse_challenges(answer.headers.get_all("WWW-Authenticate") or [])
        # The registry's own challenge replaces what an earlier run's said.
        if self._challenges is not None:
            self._challenges.forget(ref.registry)
        if "bearer" in challenges:
            params = challenges["bearer"]
            realm = params.get("realm")
            if not realm:
                raise _Fallback(f"{host} sent a Bearer challenge without a realm")
            service = params.get("service", "")
            with self._lock:
                self._bearer[ref.registry] = (realm, service)
            scope = params.get("scope") or _pull_scope(ref)
            token = self._token(ref, realm, service, scope, credentials, refused)
            # Only a realm that gave a token is worth asking first in the next run.
            if self._challenges is not None:
                self._challenges.learn(ref.registry, realm, service)
            return "Bearer " + token
        if "basic" in challenges:
            if credentials is None:
                raise _Fallback(f"{host} asks for a password and no auth file has one for {ref.name}")
            with self._lock:
                self._basic.add(ref.registry)
            return _basic_authorization(credentials)
        raise _Fallback(f"{host} answered 401 without a Bearer or Basic challenge")

    def _token(self, ref: Reference, realm: str, service: str, scope: str, credentials: Credentials | None,
               refused: str | None, *, tentative: bool = False) -> str:
        """A token for `scope`: the registry's shared token where it grants several repositories, else one per scope.

        `tentative`: the realm is remembered from an earlier run, not named by the registry in this one;
        a refusal there says nothing about the registry (see _fetch_token).
        """
        shared = self._shared_token(ref, realm, service, scope, credentials, refused, tentative=tentative)
        if shared is not None:
            return shared
        with self._lock:
            slot = self._tokens.setdefault((realm, service, scope), _TokenSlot())
        with slot.lock:
            if slot.token is None or f"Bearer {slot.token}" == refused:
                slot.token = self._fetch_token(ref.registry, realm, service, [scope], credentials, tentative=tentative)
            return slot.token

    def _shared_token(self, ref: Reference, realm: str, service: str, scope: str,
                      credentials: Credentials | None, refused: str | None, *, tentative: bool) -> str | None:
        """One token for all of this run's repositories on the registry with these credentials, asked for at once.

        None when there is no such token for `scope`: a single repository, a registry that refused a
        shared token before (a 401 with it) or granted fewer scopes than asked (its `access` claim).
        """
        with self._lock:
            if ref.registry in self._per_repository:
                return None
            grant = self._grants.get((realm, service, credentials))
        if grant is None:
            scopes = self._run_scopes(ref, credentials) | {scope}
            if len(scopes) < 2:
                return None
            with self._lock:
                grant = self._grants.setdefault((realm, service, credentials), _Grant(_bounded(scopes, scope)))
        with grant.lock:
            if grant.token is None and not grant.failed:
                try:
                    grant.token = self._fetch_token(ref.registry, realm, service, grant.scopes, credentials,
                                                    tentative=tentative)
                except _Fallback as cannot:
                    if tentative:
                        # Perhaps not this registry's token service at all: the live challenge tries again.
                        raise
                    grant.failed = True
                    self._per_repository_from_now(ref.registry, f"its token service refused {len(grant.scopes)} "
                                                                f"scopes at once ({cannot})")
                    return None
                grant.granted = _granted_scopes(grant.token)
                if grant.granted is not None and not set(grant.scopes) <= grant.granted:
                    self._log.verbose(f"registry {ref.registry}: its token grants {len(grant.granted & set(grant.scopes))}"
                                      f" of {len(grant.scopes)} repositories asked for at once; one token per "
                                      "repository for the rest")
            token = grant.token
        if token is None:
            return None
        if refused == f"Bearer {token}":
            self._per_repository_from_now(ref.registry, f"it refused the token for several repositories on {ref.repository}")
            return None
        if scope not in grant.scopes or (grant.granted is not None and scope not in grant.granted):
            return None
        return token

    def _is_shared(self, authorization: str | None) -> bool:
        with self._lock:
            return any(authorization == f"Bearer {grant.token}" for grant in self._grants.values() if grant.token)

    def _run_scopes(self, ref: Reference, credentials: Credentials | None) -> set[str]:
        """The pull scopes of this run's repositories on `ref`'s registry that use the same credentials."""
        with self._lock:
            repositories = sorted(self._expected.get(ref.registry, ()))
        scopes = set()
        for repository in repositories:
            other = ref._replace(repository=repository)
            try:
                same = self._credentials(other) == credentials
            except _Fallback:
                same = False
            if same:
                scopes.add(_pull_scope(other))
        return scopes

    def _per_repository_from_now(self, registry: str, why: str) -> None:
        with self._lock:
            first = registry not in self._per_repository
            self._per_repository.add(registry)
        if first:
            self._log.verbose(f"registry {registry}: one token per repository, because {why}")

    def _fetch_token(self, registry: str, realm: str, service: str, scopes: Sequence[str],
                     credentials: Credentials | None, *, tentative: bool = False) -> str:
        """A token from `realm`; `tentative`: a realm remembered from an earlier run, which may not be the
        registry's token service any more, so its rate limits and 429s are not taken for the registry's."""
        url = urllib.parse.urlsplit(realm)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise _Fallback(f"the token realm {realm!r} is not an http(s) URL")
        if url.scheme == "http" and url.netloc.lower() not in self._insecure:
            raise _Fallback(f"the token realm {realm} is plain HTTP and {url.netloc} is not in REGISTRY_INSECURE_HOSTS")
        parameters = ([("service", service)] if service else []) + [("scope", scope) for scope in scopes]
        query = urllib.parse.urlencode(parameters)
        target = (url.path or "/") + "?" + (f"{url.query}&{query}" if url.query else query)
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if credentials:
            headers["Authorization"] = _basic_authorization(credentials)
        self._check_stopped(registry)
        answer = self._request("GET", url.scheme, url.netloc, target, headers)
        if not tentative:
            self._note_rate_limit(registry, answer)
        if answer.status == 429 and not tentative:
            self._rate_limited(registry, answer)
            # Another 429 at the token service: without tokens nothing can be looked up there, and every
            # lookup asking again would only prolong the limit.
            reason = f"the token service {url.netloc} of {registry} is rate limiting requests (HTTP 429)"
            self._stop(registry, reason, None, "")
            raise _Failed(reason)
        if answer.status != 200:
            raise _Fallback(f"the token service {url.netloc} answered HTTP {answer.status} {answer.reason}".rstrip())
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise _Fallback(f"the token service {url.netloc} sent no token")
        return token

    # HTTP: one request at a time per connection, idle connections kept for reuse.

    def _request(self, method: str, scheme: str, host: str, target: str, headers: dict[str, str]) -> _Answer:
        deadline = time.monotonic() + self._timeout
        while True:
            connection, reused = self._checkout(scheme, host)
            try:
                answer = self._exchange(connection, method, target, headers, deadline)
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                # A kept connection may have been closed by the server meanwhile: once more on a new one.
                if reused and not isinstance(error, TimeoutError):
                    continue
                raise self._request_error(error, host) from None
            self._log.debug(f"{method} {scheme}://{host}{target}: {answer.status} {answer.reason}")
            with self._lock:
                self._idle.setdefault((scheme, host), []).append(connection)
            return answer

    def _checkout(self, scheme: str, host: str) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get((scheme, host))
            if idle:
                return idle.pop(), True
        return self._connection(scheme, host), False

    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        if scheme == "https":
            with self._lock:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
            return http.client.HTTPSConnection(host, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(host, timeout=self._timeout)

    def _exchange(
        self, connection: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str], deadline: float
    ) -> _Answer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        # Connecting (and the TLS handshake) waits at most what is left of the request's time.
        connection.timeout = remaining
        if connection.sock is not None:
            connection.sock.settimeout(remaining)
        connection.response_class = _deadline_response(deadline)
        connection.request(method, target, headers=headers)
        response = connection.getresponse()
        body = response.read(_BODY_MAX)
        if not response.isclosed():
            # An oversized body was left unread; the connection cannot carry another request.
            connection.close()
        return _Answer(response.status, response.reason, response.headers, body)

    def _request_error(self, error: Exception, host: str) -> Exception:
        if isinstance(error, TimeoutError):
            return _Failed(f"registry {host} did not answer within {self._timeout:g} s (REGISTRY_TIMEOUT)")
        if isinstance(error, ssl.SSLCertVerificationError):
            return _Fallback(f"the TLS certificate of {host} is not trusted ({error.verify_message})")
        if isinstance(error, ssl.SSLError):
            return _Fallback(
                f"TLS with {host} failed ({error.reason or error}); "
                "a registry that speaks plain HTTP must be listed in REGISTRY_INSECURE_HOSTS"
            )
        if isinstance(error, http.client.HTTPException):
            return _Fallback(f"{host} sent an answer that is not valid HTTP ({type(error).__name__})")
        reason = "connection refused" if isinstance(error, ConnectionRefusedError) else (
            getattr(error, "strerror", None) or str(error) or type(error).__name__
        )
        return _Failed(f"registry {host} unreachable: {reason}")

    # Credentials, looked up where skopeo and podman look, in their order.

    def _credentials(self, ref: Reference) -> Credentials | None:
        with self._lock:
            if self._auth_files is None:
                self._auth_files = [_read_auth_file(path, legacy) for path, legacy in _auth_file_paths(os.environ)]
            auth_files = self._auth_files
        registry = _registry_key(ref.registry)
        for auth_file in auth_files:
            if auth_file.problem:
                raise _Fallback(f"the auth file {auth_file.path} {auth_file.problem}")
            if auth_file.data is None:
                continue
            credentials = _file_credentials(auth_file, ref, registry)
            if credentials:
                return credentials
        return None


def _parse(reference: str) -> Reference:
    try:
        return parse_reference(reference)
    except ValueError as error:
        raise CipugError(f"{reference} is not a valid image reference: {error}", ExitCode.RESOLVE_FAILED) from None


def _endpoint(ref: Reference) -> str:
    return _DOCKER_HUB_ENDPOINT if ref.registry == DOCKER_HUB else ref.registry


def _media_type(answer: _Answer) -> str:
    return (answer.headers.get("Content-Type") or "").partition(";")[0].strip()


def _auth_file_paths(environ: Mapping[str, str]) -> list[tuple[Path, bool]]:
    """Auth files in skopeo's order, each with whether it has the legacy format (no `auths` level)."""
    home = Path(environ.get("HOME") or Path.home())
    if environ.get("REGISTRY_AUTH_FILE"):
        primary = Path(environ["REGISTRY_AUTH_FILE"])
    elif environ.get("XDG_RUNTIME_DIR"):
        primary = Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    else:
        primary = Path(f"/run/containers/{os.getuid()}/auth.json")
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    docker_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else home / ".docker"
    return [
        (primary, False),
        (config_home / "containers" / "auth.json", False),
        (docker_dir / "config.json", False),
        (home / ".dockercfg", True),
    ]


def _read_auth_file(path: Path, legacy: bool) -> _AuthFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _AuthFile(path, legacy)
    except (OSError, UnicodeDecodeError) as error:
        return _AuthFile(path, legacy, problem=f"cannot be read ({getattr(error, 'strerror', None) or error})")
    try:
        data = json.loads(text)
    except ValueError as error:
        return _AuthFile(path, legacy, problem=f"is not valid JSON ({error})")
    if not isinstance(data, dict):
        return _AuthFile(path, legacy, problem="does not hold a JSON object")
    return _AuthFile(path, legacy, data)


def _file_credentials(auth_file: _AuthFile, ref: Reference, registry: str) -> Credentials | None:
    """Username and password for `ref` from one auth file; None sends the search on to the next file."""
    data = auth_file.data
    assert isinstance(data, dict)
    auths = data if auth_file.legacy else data.get("auths", {})
    helpers = {} if auth_file.legacy else data.get("credHelpers", {})
    if not isinstance(auths, dict) or not isinstance(helpers, dict):
        raise _Fallback(f"the auth file {auth_file.path} has an unexpected structure")
    for key, helper in helpers.items():
        if _registry_key(key) == registry:
            raise _Fallback(f"the credential helper {helper!r} is configured for {ref.registry} in {auth_file.path}")
    # podman keys entries by registry, namespace or repository; the most specific wins.
    exact = [] if auth_file.legacy else [ref.name.rsplit("/", depth)[0] for depth in range(ref.name.count("/") + 1)]
    key = next((key for key in exact if key in auths), None)
    if key is None:
        key = next((key for key in auths if _auth_key_registry(key, auth_file.legacy) == registry), None)
    if key is None:
        return None
    credentials = _entry_credentials(auths[key], f"entry {key!r} in {auth_file.path}")
    store = data.get("credsStore") if not auth_file.legacy else None
    # With a credsStore, `docker login` leaves an empty entry and keeps the password in the store.
    if credentials is None and store:
        raise _Fallback(f"the login for {ref.registry} is kept in the credential store {store!r} ({auth_file.path})")
    return credentials


def _entry_credentials(entry: object, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise _Fallback(f"the {where} is not an object")
    if entry.get("identitytoken"):
        raise _Fallback(f"the {where} holds an identity token")
    auth = entry.get("auth")
    username: object
    password: object
    if auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (TypeError, ValueError):
            raise _Fallback(f"the {where} has an `auth` that is not base64 of user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            return None
        password = password.strip("\x00")
    else:
        username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username and password:
        return username, password
    return None


def _registry_key(registry: str) -> str:
    """One spelling per registry host, Docker Hub's several names included."""
    return "docker.io" if registry in _DOCKER_HUB_KEYS else registry


def _auth_key_registry(key: str, legacy: bool) -> str:
    """The registry an auth file key stands for: `https://index.docker.io/v1/` is docker.io."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    # Only URL keys (and legacy files) carry an API path; other paths are namespaces, matched exactly.
    if legacy or stripped != key:
        stripped = stripped.partition("/")[0]
    return _registry_key(stripped)


def _bounded(scopes: Iterable[str], first: str) -> tuple[str, ...]:
    """The scopes of one token request, `first` among them, within a query a token service accepts."""
    chosen = [first]
    length = len(first)
    for scope in sorted(set(scopes) - {first}):
        length += len(scope) + 8  # "&scope=" and URL escaping's slack
        if length > _SCOPES_QUERY_MAX:
            break
        chosen.append(scope)
    return tuple(chosen)


def _granted_scopes(token: str) -> frozenset[str] | None:
    """The `repository:NAME:ACTION` scopes a JWT's `access` claim grants; None when the token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, TypeError):
        return None
    access = claims.get("access") if isinstance(claims, dict) else None
    if not isinstance(access, list):
        return None
    granted: set[str] = set()
    for item in access:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("actions"), list):
            granted.update(f"{item.get('type')}:{item['name']}:{action}" for action in item["actions"]
                           if isinstance(action, str))
    return frozenset(granted)


def _pull_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull"


def _basic_authorization(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode("utf-8")).decode("ascii")


_CHALLENGE_ITEM = re.compile(r"""\s*,?\s*([!#$%&'*+.^_`|~\w-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*))?""")


def _parse_challenges(values: list[str]) -> dict[str, dict[str, str]]:
    """WWW-Authenticate headers as {scheme: {parameter: value}}, names lower-cased."""
    challenges: dict[str, dict[str, str]] = {}
    for value in values:
        params: dict[str, str] | None = None
        position = 0
        while position < len(value.rstrip()):
            match = _CHALLENGE_ITEM.match(value, position)
            if not match or match.end() == position:
                break
            position = match.end()
            name, raw = match.group(1), match.group(2)
            if raw is None:
                params = challenges.setdefault(name.lower(), {})
            elif params is not None:
                params[name.lower()] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
    return challenges


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header (seconds or an HTTP date) asks to wait; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    # An HTTP date is rare (registries send seconds), and email.utils costs milliseconds to import.
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
