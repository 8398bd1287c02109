"""The registry resolver against a fake registry served by the test on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import pytest

from cipug.errors import ExitCode
from cipug.lookup import registry
from cipug.errors import CipugError
from cipug.lookup.references import Resolution, parse_reference
from cipug.log import VERBOSE, Log
from cipug.lookup.ratelimits import RateLimit
from cipug.lookup.registries_conf import load_registries_conf
from cipug.lookup.registry import MANIFEST_TYPES, RegistryResolver
from tests.lookup.fake_registry import FakeRegistry, basic

# Every test here: the machine's auth files out of reach (conftest's `home`).
pytestmark = pytest.mark.usefixtures("home")
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
SKOPEO = Resolution("skopeo/answer", "sha256:" + "5" * 64)


class Fallback:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, reference: str) -> Resolution:
        self.calls.append(reference)
        return SKOPEO


@pytest.fixture
def fake(registries):
    registry = registries()
    registry.manifests = {"org/app:v1": DIGEST_A, "org/app:v2": DIGEST_B, "org/app:v3": DIGEST_A,
                          "org/other:v1": DIGEST_B}
    return registry


@pytest.fixture
def fallback() -> Fallback:
    return Fallback()


@pytest.fixture
def make(fake: FakeRegistry, out: io.StringIO, fallback: Fallback):
    resolvers: list[RegistryResolver] = []

    def make_resolver(insecure: bool = True, timeout: float = 5.0, use_fallback: bool = True) -> RegistryResolver:
        resolver = RegistryResolver((fake.host,) if insecure else (), timeout, Log(VERBOSE, out=out, err=out),
                                    fallback if use_fallback else None)
        resolvers.append(resolver)
        return resolver

    yield make_resolver
    for resolver in resolvers:
        resolver.close()


def write_auth_file(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def encoded(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def test_open_registry_answers_with_one_head(fake, make):
    assert make().resolve(f"{fake.host}/org/app:v1") == Resolution(f"{fake.host}/org/app", DIGEST_A)
    assert [(seen.method, seen.path) for seen in fake.requests] == [("HEAD", "/v2/org/app/manifests/v1")]


def test_head_asks_for_lists_indexes_and_manifests(fake, make):
    make().resolve(f"{fake.host}/org/app:v1")
    assert {part.strip() for part in fake.requests[0].accept.split(",")} == set(MANIFEST_TYPES)


def test_tag_defaults_to_latest(fake, make):
    fake.manifests["org/app:latest"] = DIGEST_B
    assert make().resolve(f"{fake.host}/org/app").digest == DIGEST_B


def test_anonymous_bearer_challenge(fake, make):
    fake.auth = "bearer"
    assert make().resolve(f"{fake.host}/org/app:v1") == Resolution(f"{fake.host}/org/app", DIGEST_A)
    assert [(seen.method, seen.path) for seen in fake.requests] == [
        ("HEAD", "/v2/org/app/manifests/v1"), ("GET", "/token"), ("HEAD", "/v2/org/app/manifests/v1")]
    token = fake.token_requests()[0]
    assert token.query == {"service": "fake-registry", "scope": "repository:org/app:pull"}
    assert token.authorization is None
    assert fake.manifest_requests()[1].authorization == "Bearer token-0"


@pytest.mark.parametrize("entry", [
    {"auth": encoded("alice", "s3cret:with:colons")},
    {"username": "alice", "password": "s3cret:with:colons"},
], ids=["auth", "username-password"])
def test_bearer_token_with_credentials_from_auth_file(fake, make, monkeypatch, tmp_path, entry):
    fake.auth = "bearer"
    fake.anonymous_tokens = False
    fake.users = {"alice": "s3cret:with:colons"}
    auth_file = write_auth_file(tmp_path / "auth.json", {"auths": {fake.host: entry}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    assert make().resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert fake.token_requests()[0].authorization == basic("alice", "s3cret:with:colons")


def test_wrong_credentials_fall_back(fake, make, monkeypatch, tmp_path, fallback, out):
    fake.auth = "bearer"
    fake.users = {"alice": "right"}
    auth_file = write_auth_file(tmp_path / "auth.json", {"auths": {fake.host: {"auth": encoded("alice", "wrong")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "token service" in resolver.fallbacks[f"{fake.host}/org/app:v1"] and "401" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_basic_challenge_then_basic_right_away(fake, make, monkeypatch, tmp_path):
    fake.auth = "basic"
    fake.users = {"bob": "pw"}
    auth_file = write_auth_file(tmp_path / "auth.json", {"auths": {fake.host: {"auth": encoded("bob", "pw")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert resolver.resolve(f"{fake.host}/org/other:v1").digest == DIGEST_B
    assert [seen.authorization for seen in fake.manifest_requests()] == [None, basic("bob", "pw"), basic("bob", "pw")]


def test_basic_challenge_without_credentials_falls_back(fake, make, fallback, out):
    fake.auth = "basic"
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert fallback.calls == [f"{fake.host}/org/app:v1"]
    assert "asks for a password" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_one_token_per_repository_across_tags_and_threads(fake, make):
    fake.auth = "bearer"
    resolver = make()
    references = [f"{fake.host}/org/app:{tag}" for tag in ("v1", "v2", "v3")] * 8
    with ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(lambda reference: resolver.resolve(reference).digest, references))
    assert digests == [DIGEST_A, DIGEST_B, DIGEST_A] * 8
    assert len(fake.token_requests()) == 1
    # A second repository on the same registry gets its token before its first HEAD.
    fake.requests.clear()
    assert resolver.resolve(f"{fake.host}/org/other:v1").digest == DIGEST_B
    assert [(seen.method, seen.path) for seen in fake.requests] == [
        ("GET", "/token"), ("HEAD", "/v2/org/other/manifests/v1")]
    assert fake.token_requests()[0].query["scope"] == "repository:org/other:pull"


def test_refused_token_is_fetched_again_once(fake, make):
    fake.auth = "bearer"
    resolver = make()
    resolver.resolve(f"{fake.host}/org/app:v1")
    fake.tokens.clear()  # the registry forgets the token, as when it expires
    assert resolver.resolve(f"{fake.host}/org/app:v2").digest == DIGEST_B
    assert len(fake.token_requests()) == 2


def test_bearer_challenge_refused_twice_falls_back(fake, make, out):
    fake.scripted = [(401, {"WWW-Authenticate": f'Bearer realm="{fake.realm}",service="fake-registry"'})] * 2
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "still answers 401" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_plain_http_token_realm_must_be_insecure(fake, make, out):
    fake.auth = "bearer"
    fake.realm = fake.realm.replace("127.0.0.1", "localhost")
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert fake.token_requests() == []
    assert "is plain HTTP" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_missing_digest_header_falls_back(fake, make, fallback, out):
    fake.digest_header = ""
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert fallback.calls == [f"{fake.host}/org/app:v1"]
    assert out.getvalue() == (
        f"{fake.host}/org/app:v1: falling back to skopeo because {fake.host} sent no Docker-Content-Digest header\n")


@pytest.mark.parametrize("digest", ["sha256:abc", "sha512:" + "a" * 128, "SHA256:" + "A" * 64, DIGEST_A + " x"])
def test_invalid_digest_header_is_not_used(fake, make, fallback, out, digest):
    fake.digest_header = digest
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "not a sha256 digest" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_unrequested_manifest_type_falls_back(fake, make, out):
    fake.media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "manifest type application/vnd.docker.distribution.manifest.v1+prettyjws" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


@pytest.mark.parametrize("media_type", MANIFEST_TYPES)
def test_requested_manifest_types_are_accepted(fake, make, media_type):
    fake.media_type = media_type + "; charset=utf-8"
    assert make().resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A


def test_unknown_tag_is_final(fake, make, fallback):
    with pytest.raises(CipugError) as raised:
        make().resolve(f"{fake.host}/org/app:nope")
    assert raised.value.code == ExitCode.RESOLVE_FAILED
    assert str(raised.value) == (
        f"{fake.host}/org/app:nope could not be resolved: tag nope not found in registry {fake.host} (repository org/app)")
    assert fallback.calls == []


def test_unexpected_status_falls_back(fake, make, out):
    fake.scripted = [(500, {})]
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "answered HTTP 500 Internal Server Error" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_fallback_off_raises_with_reference_and_reason(fake, make):
    fake.digest_header = ""
    with pytest.raises(CipugError) as raised:
        make(use_fallback=False).resolve(f"{fake.host}/org/app:v1")
    assert raised.value.code == ExitCode.RESOLVE_FAILED
    assert str(raised.value) == (
        f"{fake.host}/org/app:v1 could not be resolved: {fake.host} sent no Docker-Content-Digest header "
        "(REGISTRY_FALLBACK is off)")


@pytest.mark.parametrize("retry_after", ["0", "1", formatdate(time.time() + 1, usegmt=True)])
def test_short_retry_after_is_waited_for_once(fake, make, retry_after):
    fake.scripted = [(429, {"Retry-After": retry_after})]
    assert make().resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert len(fake.manifest_requests()) == 2


@pytest.mark.parametrize("headers", [{"Retry-After": "120"}, {}, {"Retry-After": "soon"}])
def test_long_or_missing_retry_after_fails_at_once(fake, make, fallback, headers):
    fake.scripted = [(429, headers)]
    started = time.monotonic()
    with pytest.raises(CipugError, match="rate limiting requests") as raised:
        make().resolve(f"{fake.host}/org/app:v1")
    assert time.monotonic() - started < 2
    assert raised.value.code == ExitCode.RESOLVE_FAILED
    assert fallback.calls == [] and len(fake.manifest_requests()) == 1


def test_second_429_fails(fake, make):
    fake.scripted = [(429, {"Retry-After": "0"})] * 2
    with pytest.raises(CipugError, match="HTTP 429"):
        make().resolve(f"{fake.host}/org/app:v1")
    assert len(fake.manifest_requests()) == 2


def test_slow_registry_hits_the_timeout(fake, make, fallback):
    fake.delay = 30
    started = time.monotonic()
    with pytest.raises(CipugError, match=r"did not answer within 0\.3 s") as raised:
        make(timeout=0.3).resolve(f"{fake.host}/org/app:v1")
    assert time.monotonic() - started < 2
    assert raised.value.code == ExitCode.RESOLVE_FAILED and fallback.calls == []


def test_trickling_answer_cannot_stretch_the_timeout(fake, make):
    fake.trickle = 0.05  # every byte arrives well within the timeout, the whole answer does not
    started = time.monotonic()
    with pytest.raises(CipugError, match="did not answer within"):
        make(timeout=0.5).resolve(f"{fake.host}/org/app:v1")
    assert time.monotonic() - started < 2


def test_connections_are_kept_and_renewed_when_dropped(fake, make):
    resolver = make()
    accepted = []
    original = fake.server.get_request

    def get_request():
        accepted.append(1)
        return original()

    fake.server.get_request = get_request
    for tag in ("v1", "v2", "v3"):
        resolver.resolve(f"{fake.host}/org/app:{tag}")
    assert len(accepted) == 1
    fake.drop_connections = True
    for tag in ("v1", "v2", "v3"):
        resolver.resolve(f"{fake.host}/org/app:{tag}")
    assert len(fake.manifest_requests()) == 6


def test_only_head_reaches_manifests(fake, make):
    fake.auth = "bearer"
    resolver = make()
    for reference in ("org/app:v1", "org/app:v2", "org/other:v1"):
        resolver.resolve(f"{fake.host}/{reference}")
    assert {seen.method for seen in fake.manifest_requests()} == {"HEAD"}


def test_plain_http_registry_not_listed_falls_back(fake, make, fallback, out):
    resolver = make(insecure=False)
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert fallback.calls == [f"{fake.host}/org/app:v1"]
    assert f"TLS with {fake.host} failed" in resolver.fallbacks[f"{fake.host}/org/app:v1"]
    assert "REGISTRY_INSECURE_HOSTS" in resolver.fallbacks[f"{fake.host}/org/app:v1"]
    assert fake.manifest_requests() == []


def test_credential_helper_falls_back_without_a_request(fake, make, fallback, monkeypatch, tmp_path, out):
    auth_file = write_auth_file(tmp_path / "auth.json", {"auths": {}, "credHelpers": {fake.host: "secretservice"}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "credential helper 'secretservice'" in resolver.fallbacks[f"{fake.host}/org/app:v1"]
    assert fake.requests == []


def test_credential_store_login_falls_back(fake, make, home, out):
    write_auth_file(home / ".docker" / "config.json", {"auths": {fake.host: {}}, "credsStore": "desktop"})
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "credential store 'desktop'" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_credential_store_without_login_is_anonymous(fake, make, home):
    write_auth_file(home / ".docker" / "config.json", {"auths": {}, "credsStore": "desktop"})
    assert make().resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A


def test_identity_token_falls_back(fake, make, home, out):
    write_auth_file(home / ".docker" / "config.json", {"auths": {fake.host: {"identitytoken": "xyz"}}})
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "identity token" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_unreadable_auth_file_falls_back(fake, make, monkeypatch, tmp_path, out):
    auth_file = tmp_path / "auth.json"
    auth_file.write_text("{not json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    assert "is not valid JSON" in resolver.fallbacks[f"{fake.host}/org/app:v1"]


def test_digest_reference_needs_no_request(make):
    resolver = make()
    assert resolver.resolve(f"127.0.0.1:1/app:v1@{DIGEST_B}") == Resolution("127.0.0.1:1/app", DIGEST_B)
    assert resolver.resolve(f"nextcloud@{DIGEST_A}") == Resolution("docker.io/library/nextcloud", DIGEST_A)


def test_invalid_reference_fails(make):
    with pytest.raises(CipugError, match="Nextcloud is not a valid image reference: .*must be lowercase") as raised:
        make().resolve("Nextcloud")
    assert raised.value.code == ExitCode.RESOLVE_FAILED


def test_connection_refused_is_final(make, fallback):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    resolver = RegistryResolver((f"127.0.0.1:{port}",), 5, Log(VERBOSE, out=io.StringIO()), fallback)
    with pytest.raises(CipugError) as raised:
        resolver.resolve(f"127.0.0.1:{port}/app")
    assert str(raised.value) == (
        f"127.0.0.1:{port}/app could not be resolved: registry 127.0.0.1:{port} unreachable: connection refused")
    assert raised.value.code == ExitCode.RESOLVE_FAILED and fallback.calls == []


def test_docker_hub_is_asked_at_registry_1_over_https(monkeypatch, make):
    seen = []

    class Connection:
        def __init__(self, host, timeout, context):
            seen.append(host)
            self.sock = None

        def request(self, method, target, headers):
            seen.append((method, target))
            raise ConnectionRefusedError()

        def close(self):
            pass

    monkeypatch.setattr(http.client, "HTTPSConnection", Connection)
    with pytest.raises(CipugError, match="registry registry-1.docker.io unreachable"):
        make().resolve("nextcloud")
    assert seen == ["registry-1.docker.io", ("HEAD", "/v2/library/nextcloud/manifests/latest")]


# Where credentials come from: the files and keys skopeo and podman read.

def credentials_for(reference: str):
    resolver = RegistryResolver((), 1, Log(VERBOSE, out=io.StringIO()), None)
    return resolver._credentials(parse_reference(reference))


@pytest.mark.parametrize("key", ["docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_keys(home, key):
    write_auth_file(home / ".docker" / "config.json", {"auths": {key: {"auth": encoded("hub", "pw")}}})
    assert credentials_for("nextcloud") == ("hub", "pw")
    assert credentials_for("ghcr.io/org/app") is None


def test_most_specific_key_wins(home):
    write_auth_file(home / ".config" / "containers" / "auth.json", {"auths": {
        "quay.io": {"auth": encoded("registry", "pw")},
        "quay.io/org": {"auth": encoded("namespace", "pw")},
        "quay.io/org/app": {"auth": encoded("repository", "pw")},
    }})
    assert credentials_for("quay.io/org/app") == ("repository", "pw")
    assert credentials_for("quay.io/org/other") == ("namespace", "pw")
    assert credentials_for("quay.io/else/app") == ("registry", "pw")


def test_namespace_keys_do_not_match_other_namespaces(home):
    write_auth_file(home / ".docker" / "config.json", {"auths": {"quay.io/org": {"auth": encoded("ns", "pw")}}})
    assert credentials_for("quay.io/else/app") is None


def test_auth_files_in_skopeo_order(home, tmp_path, monkeypatch):
    def login(path: Path, user: str) -> None:
        write_auth_file(path, {"auths": {"ghcr.io": {"auth": encoded(user, "pw")}}})

    login(home / ".docker" / "config.json", "docker")
    assert credentials_for("ghcr.io/a/b") == ("docker", "pw")
    login(home / ".config" / "containers" / "auth.json", "config")
    assert credentials_for("ghcr.io/a/b") == ("config", "pw")
    login(tmp_path / "run" / "containers" / "auth.json", "runtime")
    assert credentials_for("ghcr.io/a/b") == ("runtime", "pw")
    login(tmp_path / "explicit.json", "explicit")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "explicit.json"))
    assert credentials_for("ghcr.io/a/b") == ("explicit", "pw")


def test_entries_without_credentials_are_passed_over(home, tmp_path):
    write_auth_file(tmp_path / "run" / "containers" / "auth.json", {"auths": {"ghcr.io": {}}})
    write_auth_file(home / ".docker" / "config.json", {"auths": {"ghcr.io": {"auth": encoded("docker", "pw")}}})
    assert credentials_for("ghcr.io/a/b") == ("docker", "pw")


def test_legacy_dockercfg(home):
    (home / ".dockercfg").write_text(json.dumps({"https://ghcr.io/v1/": {"auth": encoded("old", "pw")}}))
    assert credentials_for("ghcr.io/a/b") == ("old", "pw")


def test_docker_config_variable(home, tmp_path, monkeypatch):
    write_auth_file(tmp_path / "dc" / "config.json", {"auths": {"ghcr.io": {"auth": encoded("dc", "pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert credentials_for("ghcr.io/a/b") == ("dc", "pw")


def test_challenge_parsing():
    parsed = registry._parse_challenges([
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
        'Basic realm="say \\"hi\\"", Other x=1',
    ])
    assert parsed == {
        "bearer": {"realm": "https://auth.example/token", "service": "registry.example",
                   "scope": "repository:a/b:pull"},
        "basic": {"realm": 'say "hi"'},
        "other": {"x": "1"},
    }


# One token for several repositories, rate limits, and the two kinds of 429.

HUB_PULL_LIMIT_BODY = (b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. '
                       b'You may increase the limit by authenticating and upgrading: '
                       b'https://www.docker.com/increase-rate-limits"}]}')


def resolve_together(resolver: RegistryResolver, references: list[str], workers: int = 8) -> list:
    resolver.expect(references)

    def attempt(reference: str):
        try:
            return resolver.resolve(reference)
        except CipugError as error:
            return error

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(attempt, references))


@pytest.fixture
def many(fake: FakeRegistry) -> list[str]:
    for number in range(12):
        fake.manifests[f"org/repo{number}:v1"] = DIGEST_A
    return [f"{fake.host}/org/repo{number}:v1" for number in range(12)]


@pytest.mark.parametrize("jwt", [False, True], ids=["opaque", "jwt"])
def test_one_token_for_all_repositories_of_the_run(fake, make, many, jwt):
    fake.auth = "bearer"
    fake.jwt = jwt
    results = resolve_together(make(), many)
    assert [result.digest for result in results] == [DIGEST_A] * len(many)
    [token] = fake.token_requests()
    assert sorted(token.scopes) == sorted(f"repository:org/repo{number}:pull" for number in range(12))
    # The first lookup runs alone and meets the challenge; every other HEAD carries the token at once.
    assert len(fake.manifest_requests()) == len(many) + 1
    assert sum(seen.authorization is None for seen in fake.manifest_requests()) == 1


def test_a_token_granting_fewer_scopes_means_a_token_per_repository_for_the_rest(fake, make, many, out):
    fake.auth = "bearer"
    fake.jwt = True
    fake.multi_scope = False  # grants the first scope asked for, and its `access` claim says so
    results = resolve_together(make(), many)
    assert [result.digest for result in results] == [DIGEST_A] * len(many)
    assert len(fake.token_requests()) == len(many)
    assert len(fake.token_requests()[0].scopes) == len(many)
    assert all(len(seen.scopes) == 1 for seen in fake.token_requests()[1:])
    # Nothing was refused: the claim said what the token covers before it was used.
    assert sum(seen.authorization is None for seen in fake.manifest_requests()) == 1
    assert "one token per repository for the rest" in out.getvalue()


def test_an_opaque_token_refused_on_a_repository_switches_to_tokens_per_repository(fake, make, many, out):
    fake.auth = "bearer"
    fake.multi_scope = False  # grants only the first scope, and the token does not say so
    resolver = make()
    results = resolve_together(resolver, many, workers=4)
    assert [result.digest for result in results] == [DIGEST_A] * len(many)
    assert resolver.fallbacks == {}
    # One shared token, then one per repository; each lookup at most one refused HEAD.
    assert len(fake.token_requests()) <= len(many) + 1
    assert len(fake.manifest_requests()) <= 2 * len(many) + 1
    assert "one token per repository, because it refused the token for several repositories" in out.getvalue()


def test_a_single_repository_asks_for_its_own_scope(fake, make):
    fake.auth = "bearer"
    resolve_together(make(), [f"{fake.host}/org/app:v1", f"{fake.host}/org/app:v2"])
    [token] = fake.token_requests()
    assert token.scopes == ("repository:org/app:pull",)


def test_rate_limit_headers_are_kept_lowest_first(fake, make):
    fake.rate_limit = [100, 76, 21600]
    resolver = make()
    resolver.resolve(f"{fake.host}/org/app:v1")
    assert resolver.rate_limits == {fake.host: RateLimit(100, 76, 21600)}
    fake.rate_limit = [100, 80, 21600]  # an answer that overtook an earlier one
    resolver.resolve(f"{fake.host}/org/app:v2")
    assert resolver.rate_limits[fake.host].remaining == 76
    assert resolver.report().rate_limits == {fake.host: RateLimit(100, 76, 21600)}
    assert {seen.method for seen in fake.manifest_requests()} == {"HEAD"}


def test_pull_limit_429_stops_the_registry_for_the_run(fake, make, many, fallback, out):
    fake.rate_limit = [100, 0, 21600]
    fake.scripted = [(429, {"Retry-After": "3600", "ratelimit-limit": "100;w=21600",
                            "ratelimit-remaining": "0;w=21600"})] * 50
    resolver = make()
    started = time.time()
    results = resolve_together(resolver, many)
    first, *rest = results
    assert isinstance(first, CipugError) and first.code == ExitCode.RESOLVE_FAILED
    assert "pull rate limit reached (HTTP 429)" in str(first)
    assert all(isinstance(result, CipugError) and ": not checked: " in str(result) for result in rest)
    assert all(result.code == ExitCode.RESOLVE_FAILED for result in rest)
    # The first lookup ran alone: nothing else was sent, nothing retried, skopeo not asked.
    assert len(fake.manifest_requests()) == 1 and fallback.calls == []
    assert started + 3590 < resolver.stopped[fake.host] < time.time() + 3610
    assert out.getvalue().count("pull rate limit reached") == 1
    assert resolver.rate_limits[fake.host].remaining == 0


def test_pull_limit_429_without_retry_after_is_stopped_for_the_window(fake, make):
    fake.scripted = [(429, {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"})]
    resolver = make()
    with pytest.raises(CipugError, match="at the latest"):
        resolver.resolve(f"{fake.host}/org/app:v1")
    assert resolver.stopped[fake.host] == pytest.approx(time.time() + 21600, abs=10)


def test_docker_hubs_pull_limit_body_at_the_token_service_stops_the_registry(fake, make, many, fallback):
    fake.auth = "bearer"
    fake.token_scripted = [(429, {"Content-Type": "application/json"}, HUB_PULL_LIMIT_BODY)]
    resolver = make()
    results = resolve_together(resolver, many)
    assert all(isinstance(result, CipugError) for result in results)
    assert sum(": not checked: " in str(result) for result in results) == len(many) - 1
    assert len(fake.token_requests()) == 1 and len(fake.manifest_requests()) == 1
    assert fallback.calls == [] and resolver.stopped == {fake.host: None}


def test_abuse_limit_429_is_retried_once_and_stops_nothing(fake, make):
    fake.scripted = [(429, {"Retry-After": "0"}, b"Too Many Requests")]
    resolver = make()
    assert resolver.resolve(f"{fake.host}/org/app:v1").digest == DIGEST_A
    assert resolver.resolve(f"{fake.host}/org/app:v2").digest == DIGEST_B
    assert resolver.stopped == {} and len(fake.manifest_requests()) == 3


def test_registries_conf_sends_the_reference_to_skopeo_with_the_reason(fake, make, fallback, out, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nprefix = "{fake.host}/org"\nlocation = "{fake.host}/mirror"\n')
    resolver = RegistryResolver((fake.host,), 5, Log(VERBOSE, out=out, err=out), fallback,
                                load_registries_conf(("skopeo", "--registries-conf", str(conf)), {"HOME": str(tmp_path)}))
    assert resolver.resolve(f"{fake.host}/org/app:v1") == SKOPEO
    fake.manifests["else/app:v1"] = DIGEST_B
    assert resolver.resolve(f"{fake.host}/else/app:v1").digest == DIGEST_B
    assert resolver.fallbacks == {f"{fake.host}/org/app:v1": f"{conf} rewrites {fake.host}/org to {fake.host}/mirror"}
    assert f"{fake.host}/org/app:v1: falling back to skopeo because {conf} rewrites" in out.getvalue()
    assert [seen.path for seen in fake.manifest_requests()] == ["/v2/else/app/manifests/v1"]


def test_a_shared_token_that_misses_the_first_repository_too_is_replaced_not_fallen_back(fake, make, many, fallback):
    fake.auth = "bearer"
    fake.multi_scope = "last"  # grants one scope, not the one of the repository asking, and does not say so
    resolver = make()
    results = resolve_together(resolver, many, workers=4)
    assert [result.digest for result in results] == [DIGEST_A] * len(many)
    assert fallback.calls == [] and resolver.fallbacks == {}
    assert len(fake.manifest_requests()) <= 3 * len(many)


def test_an_abuse_limit_at_the_token_service_stops_the_registry_without_retries(fake, make, many, fallback):
    fake.auth = "bearer"
    fake.token_scripted = [(429, {"Retry-After": "1"}, b"Too Many Requests")]
    resolver = make()
    results = resolve_together(resolver, many)
    assert all(isinstance(result, CipugError) for result in results)
    assert "token service" in str(results[0]) and "HTTP 429" in str(results[0])
    assert len(fake.token_requests()) == 1 and fallback.calls == []
    assert sum(": not checked: " in str(result) for result in results) == len(many) - 1
