"""Bearer challenges remembered across runs: the first lookup of a registry asks its token service at once."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cipug.errors import CipugError, ExitCode
from cipug.log import VERBOSE, Log
from cipug.lookup import resolve
from cipug.lookup.challenges import CHALLENGES_FILE, REGISTRIES_MAX, Challenges
from cipug.lookup.references import Resolution
from cipug.lookup.registry import RegistryResolver
from cipug.settings import load_settings
from tests.lookup.fake_registry import FakeRegistry, basic

pytestmark = pytest.mark.usefixtures("home")
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
SKOPEO = Resolution("skopeo/answer", "sha256:" + "5" * 64)


@pytest.fixture
def fake(registries):
    registry = registries()
    registry.auth = "bearer"
    registry.manifests = {"org/app:v1": DIGEST_A, "org/other:v1": DIGEST_B}
    return registry


@pytest.fixture
def trap(registries):
    """Another token service: its tokens mean nothing to `fake`, and it must be asked only where a test says."""
    registry = registries()
    return registry


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / CHALLENGES_FILE


@pytest.fixture
def run(fake: FakeRegistry, trap: FakeRegistry, path: Path, out: io.StringIO):
    """One cipug run's resolver: loads the remembered challenges, saves them on close()."""
    resolvers: list[RegistryResolver] = []

    def make_run(insecure: tuple[str, ...] | None = None, fallback: bool = False) -> RegistryResolver:
        log = Log(VERBOSE, out=out, err=out)
        resolver = RegistryResolver((fake.host, trap.host) if insecure is None else insecure, 5, log,
                                    (lambda reference: SKOPEO) if fallback else None, None, Challenges.load(path, log))
        resolvers.append(resolver)
        return resolver

    yield make_run
    for resolver in resolvers:
        resolver.close()


def remember(path: Path, registry: str, realm: str, service: str = "fake-registry") -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(json.dumps({registry: {"realm": realm, "service": service}}))
    path.chmod(0o600)


def requests(*registries: FakeRegistry) -> list[tuple[str, str, bool]]:
    return [(seen.method, seen.path, seen.authorization is not None) for fake in registries for seen in fake.requests]


LIVE = [("HEAD", "/v2/org/app/manifests/v1", False), ("GET", "/token", False), ("HEAD", "/v2/org/app/manifests/v1", True)]
REMEMBERED = [("GET", "/token", False), ("HEAD", "/v2/org/app/manifests/v1", True)]


def test_the_next_run_asks_the_token_service_without_the_401(fake, run, path):
    first = run()
    assert first.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    first.close()
    assert requests(fake) == LIVE
    assert json.loads(path.read_text()) == {fake.host: {"realm": fake.realm, "service": "fake-registry"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    fake.requests.clear()
    written = path.stat()
    second = run()
    assert second.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    second.close()
    assert requests(fake) == REMEMBERED
    # Nothing changed: not written again.
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_a_remembered_challenge_still_gets_one_token_for_every_repository(fake, run, path):
    for number in range(12):
        fake.manifests[f"org/repo{number}:v1"] = DIGEST_A
    references = [f"{fake.host}/org/repo{number}:v1" for number in range(12)]
    remember(path, fake.host, fake.realm)
    resolver = run()
    resolver.expect(references)
    with ThreadPoolExecutor(8) as pool:
        assert [result.digest for result in pool.map(resolver.resolve, references)] == [DIGEST_A] * 12
    [token] = fake.token_requests()
    assert len(token.scopes) == 12
    assert len(fake.manifest_requests()) == 12 and all(seen.authorization for seen in fake.manifest_requests())


@pytest.mark.parametrize("stale", ["moved", "refused", "unreachable", "pull-limit"])
def test_a_stale_realm_costs_one_request_then_the_live_challenge_answers(fake, run, path, out, stale):
    realm = fake.realm
    if stale == "moved":
        realm = f"http://{fake.host}/old-token"  # the fake answers 404 there
    elif stale == "refused":
        fake.token_scripted = [(403, {}, b"")]
    elif stale == "pull-limit":
        # Whatever answers at a remembered realm, its 429 does not stop the registry.
        fake.token_scripted = [(429, {"ratelimit-remaining": "0;w=21600"}, b"toomanyrequests")]
    else:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            realm = f"http://127.0.0.1:{unused.getsockname()[1]}/token"
    remember(path, fake.host, realm)
    resolver = run(insecure=(fake.host, realm.split("/")[2]))
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert resolver.stopped == {} and resolver.rate_limits == {}
    assert len(fake.requests) <= len(LIVE) + 1 and requests(fake)[-3:] == LIVE
    assert "the token service remembered from an earlier run gave no token" in out.getvalue()
    resolver.close()
    assert json.loads(path.read_text()) == {fake.host: {"realm": fake.realm, "service": "fake-registry"}}


def test_a_stale_refusal_does_not_switch_the_registry_to_a_token_per_repository(fake, run, path):
    for number in range(6):
        fake.manifests[f"org/repo{number}:v1"] = DIGEST_A
    references = [f"{fake.host}/org/repo{number}:v1" for number in range(6)]
    fake.token_scripted = [(400, {}, b"")]
    remember(path, fake.host, fake.realm)
    resolver = run()
    resolver.expect(references)
    with ThreadPoolExecutor(4) as pool:
        assert [result.digest for result in pool.map(resolver.resolve, references)] == [DIGEST_A] * 6
    # The refused shared request, then the live challenge's shared token: two, not one per repository.
    assert [len(seen.scopes) for seen in fake.token_requests()] == [6, 6]
    assert len(fake.manifest_requests()) == 6 + 1


def test_a_401_to_the_remembered_realms_token_meets_the_live_challenge(fake, trap, run, path):
    trap.service = "fake-registry"
    remember(path, fake.host, trap.realm)
    resolver = run()
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert requests(trap) == [("GET", "/token", False)]
    assert requests(fake) == [("HEAD", "/v2/org/app/manifests/v1", True), *LIVE[1:]]
    resolver.close()
    assert json.loads(path.read_text())[fake.host]["realm"] == fake.realm


def test_a_registry_that_no_longer_asks_for_a_bearer_token_is_forgotten(fake, run, path):
    fake.auth = "basic"  # and no password for it: skopeo's turn
    remember(path, fake.host, fake.realm)
    resolver = run(fallback=True)
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    resolver.close()
    assert json.loads(path.read_text()) == {}


def test_a_pull_limit_429_after_a_remembered_token_still_stops_everything_at_once(fake, run, path):
    fake.scripted = [(429, {"Retry-After": "3600", "ratelimit-remaining": "0;w=21600"})] * 20
    references = [f"{fake.host}/org/app:v1", f"{fake.host}/org/other:v1"] * 4
    remember(path, fake.host, fake.realm)
    resolver = run()
    resolver.expect(references)

    def attempt(reference: str) -> CipugError:
        with pytest.raises(CipugError) as raised:
            resolver.resolve(reference)
        return raised.value

    with ThreadPoolExecutor(8) as pool:
        errors = list(pool.map(attempt, references))
    assert all(error.code == ExitCode.RESOLVE_FAILED for error in errors)
    assert sum(": not checked: " in str(error) for error in errors) == len(references) - 1
    assert len(fake.token_requests()) == 1 and len(fake.manifest_requests()) == 1


def test_a_read_by_digest_uses_the_remembered_challenge_too(fake, run, path):
    body = b'{"schemaVersion": 2}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    fake.documents[digest] = ("application/vnd.oci.image.manifest.v1+json", body)
    remember(path, fake.host, fake.realm)
    got = run().read(f"{fake.host}/org/app@{digest}", lambda fetch: fetch("manifests", digest), None)
    assert got == ("application/vnd.oci.image.manifest.v1+json", body)
    assert requests(fake) == [("GET", "/token", False), ("GET", f"/v2/org/app/manifests/{digest}", True)]


def test_with_credentials_the_remembered_realm_is_not_asked(fake, trap, run, path, monkeypatch, tmp_path):
    fake.anonymous_tokens = False
    fake.users = {"alice": "pw"}
    auth_file = tmp_path / "auth.json"
    auth = base64.b64encode(b"alice:pw").decode()
    auth_file.write_text(json.dumps({"auths": {fake.host: {"auth": auth}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    remember(path, fake.host, trap.realm)
    assert run().resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert trap.requests == []
    assert [(seen.method, seen.path) for seen in fake.requests] == [(method, target) for method, target, _ in LIVE]
    assert fake.requests[0].authorization is None
    assert fake.token_requests()[0].authorization == basic("alice", "pw")


def test_an_https_registry_does_not_take_a_plain_http_realm_from_the_file(fake, trap, run, path):
    # fake.host is not insecure here: https, which the fake does not speak, so the lookup goes to skopeo.
    remember(path, fake.host, trap.realm)
    assert run(insecure=(trap.host,), fallback=True).resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert trap.requests == []


PLANTED = {
    "damaged": ("{not json", "warning: ignoring"),
    "not an object": ("[]", "ignoring"),
    "another scheme": ('{"HOST": {"realm": "ftp://TRAP/token", "service": "fake-registry"}}', "ignoring"),
    "relative realm": ('{"HOST": {"realm": "/token", "service": "fake-registry"}}', "ignoring"),
    "more keys": ('{"HOST": {"realm": "http://TRAP/token", "service": "s", "scope": "x"}}', "ignoring"),
    "service not a string": ('{"HOST": {"realm": "http://TRAP/token", "service": 1}}', "ignoring"),
    "too many": (json.dumps({f"r{number}.test": {"realm": "http://TRAP/token", "service": "s"}
                             for number in range(REGISTRIES_MAX)} | {"HOST": {"realm": "http://TRAP/token",
                                                                              "service": "fake-registry"}}),
                 "more than 64"),
}


@pytest.mark.parametrize("case", PLANTED)
def test_a_file_that_is_not_what_cipug_writes_is_ignored_and_replaced(fake, trap, run, path, out, case):
    text, said = PLANTED[case]
    path.parent.mkdir(mode=0o700)
    path.write_text(text.replace("HOST", fake.host).replace("TRAP", trap.host))
    path.chmod(0o600)
    resolver = run()
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert trap.requests == [] and requests(fake) == LIVE
    assert said in out.getvalue() and str(path) in out.getvalue()
    resolver.close()
    assert json.loads(path.read_text()) == {fake.host: {"realm": fake.realm, "service": "fake-registry"}}


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "symlink"])
def test_a_file_anyone_else_could_have_written_is_ignored_and_replaced_by_a_private_one(
        fake, trap, run, path, out, tmp_path, how):
    trap.service = "fake-registry"
    remember(path, fake.host, trap.realm)
    if how == "symlink":
        target = tmp_path / "elsewhere.json"
        path.rename(target)
        path.symlink_to(target)
    else:
        path.chmod(0o666 if how == "world-writable" else 0o620)
    resolver = run()
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert trap.requests == [] and requests(fake) == LIVE
    assert f"warning: ignoring {path}" in out.getvalue()
    resolver.close()
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())[fake.host]["realm"] == fake.realm
    if how == "symlink":
        assert json.loads(target.read_text())[fake.host]["realm"] == trap.realm


def test_a_failed_write_is_a_warning(fake, run, path, out):
    path.parent.write_text("")  # a file where its folder should be
    resolver = run()
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    resolver.close()
    assert "warning:" in out.getvalue() and str(path) in out.getvalue()


def test_learning_keeps_at_most_the_most_recent_registries(path):
    challenges = Challenges(path, Log(VERBOSE, io.StringIO(), io.StringIO()), {})
    for number in range(REGISTRIES_MAX + 3):
        challenges.learn(f"r{number}.test", f"https://auth{number}.test/token", "s")
    challenges.learn("r0.test", "https://auth.test/token", "s")  # not stale, relearnt: it stays
    challenges.save()
    saved = json.loads(path.read_text())
    assert len(saved) == REGISTRIES_MAX
    assert "r0.test" in saved and "r3.test" not in saved and "r4.test" in saved
    assert Challenges.load(path, Log(VERBOSE, io.StringIO(), io.StringIO())).get("r0.test") == (
        "https://auth.test/token", "s")


def test_a_realm_that_cannot_be_kept_is_not_learnt(path):
    challenges = Challenges(path, Log(VERBOSE, io.StringIO(), io.StringIO()), {"a.test": ("https://a/token", "")})
    challenges.learn("a.test", "https://a/to ken", "")
    assert challenges.get("a.test") is None


def test_the_file_is_next_to_the_digest_cache_whatever_cache_duration(fake, tmp_path):
    cache = tmp_path / "state" / "digests.json"
    settings = load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path), "CIPUG_CACHE_LOCATION": str(cache),
                              "CIPUG_CACHE_DURATION": "0", "CIPUG_REGISTRY_INSECURE_HOSTS": fake.host,
                              "CIPUG_REGISTRY_FALLBACK": "false"}, cwd=tmp_path)
    resolver = resolve.registry_resolver(settings, Log(VERBOSE, io.StringIO(), io.StringIO()), None)
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    resolver.close()
    assert os.listdir(cache.parent) == [CHALLENGES_FILE]
    fake.requests.clear()
    again = resolve.registry_resolver(settings, Log(VERBOSE, io.StringIO(), io.StringIO()), None)
    assert again.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    again.close()
    assert requests(fake) == REMEMBERED
