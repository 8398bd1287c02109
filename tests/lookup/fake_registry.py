"""A fake registry served by the test on 127.0.0.1: manifests, blobs, a token service, scripted misbehaviour."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    accept: str | None
    scopes: tuple[str, ...] = ()


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class FakeRegistry:
    """A registry API subset: manifests, blobs, a token service at /token, scripted misbehaviour.

    Also a CDN: `/cdn/DIGEST` serves `blobs` to anyone, where `blob_redirect` sends blob requests.
    """

    def __init__(self) -> None:
        self.manifests: dict[str, str] = {}  # "repo:tag" -> digest
        self.documents: dict[str, tuple[str, bytes]] = {}  # digest -> media type and body, GET by digest
        self.blobs: dict[str, bytes] = {}  # digest -> body, in every repository
        self.blob_redirect: str | None = None  # a URL prefix: blob requests get a 307 to PREFIX/DIGEST
        self.auth: str | None = None  # None, "bearer" or "basic"
        self.users: dict[str, str] = {}
        self.anonymous_tokens = True
        self.service = "fake-registry"
        self.media_type = DOCKER_V2
        self.digest_header: str | None = None  # sent instead of the real digest; "" sends none
        self.scripted: list[tuple[int, dict[str, str]]] = []  # answers for the next manifest requests
        self.token_scripted: list[tuple[int, dict[str, str], bytes]] = []  # answers for the next token requests
        self.multi_scope: bool | str = True  # grant every scope= of a token request, else the first ("last": the last)
        self.jwt = False  # tokens that say what they grant in an `access` claim, as Docker Hub's do
        self.rate_limit: list[int] | None = None  # [limit, remaining, window]: ratelimit-* headers, GETs count
        self.delay = 0.0
        self.trickle = 0.0  # seconds between the bytes of a manifest answer
        self.drop_connections = False
        self.requests: list[Seen] = []
        self.tokens: dict[str, set[str]] = {}  # token -> scopes it grants
        self.lock = threading.Lock()
        self.released = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        # socketserver's listen backlog of 5 would drop connections opened at once (a second each).
        server = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 64})
        self.server = server(("127.0.0.1", 0), handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.realm = f"http://{self.host}/token"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def manifest_requests(self) -> list[Seen]:
        return [seen for seen in self.requests if "/manifests/" in seen.path]

    def token_requests(self) -> list[Seen]:
        return [seen for seen in self.requests if seen.path == "/token"]

    def serve(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        pairs = parse_qsl(url.query)
        query = dict(pairs)
        scopes = tuple(value for name, value in pairs if name == "scope")
        with self.lock:
            self.requests.append(Seen(method, url.path, query, handler.headers.get("Authorization"),
                                      handler.headers.get("Accept"), scopes))
        if url.path == "/token":
            return self._token(handler, query, scopes)
        cdn = re.fullmatch(r"/cdn/([^/]+)", url.path)
        if cdn:
            found = self.blobs.get(cdn.group(1))
            return self._send(handler, method, 404) if found is None else self._send(handler, method, 200, {}, found)
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", url.path)
        if not match:
            return self._send(handler, method, 404)
        repository, kind, tag = match.groups()
        if self.delay:
            self.released.wait(self.delay)
        with self.lock:
            scripted = self.scripted.pop(0) if self.scripted else None
        if scripted:
            return self._send(handler, method, *scripted)
        challenge = self._challenge(handler.headers.get("Authorization", ""), repository)
        if challenge:
            return self._send(handler, method, 401, {"WWW-Authenticate": challenge})
        if kind == "blobs":
            return self._blob(handler, method, tag)
        if tag in self.documents:
            media_type, body = self.documents[tag]
            headers = {"Content-Type": media_type, "Docker-Content-Digest": tag, **self._rate_limit_headers(method)}
            return self._send(handler, method, 200, headers, body)
        digest = self.manifests.get(f"{repository}:{tag}")
        if digest is None:
            return self._send(handler, method, 404)
        headers = {"Content-Type": self.media_type, **self._rate_limit_headers(method)}
        sent = digest if self.digest_header is None else self.digest_header
        if sent:
            headers["Docker-Content-Digest"] = sent
        if self.trickle:
            return self._trickle(handler, headers)
        self._send(handler, method, 200, headers, b'{"schemaVersion": 2}')

    def _blob(self, handler: _Handler, method: str, digest: str) -> None:
        if digest not in self.blobs:
            return self._send(handler, method, 404)
        if self.blob_redirect:
            return self._send(handler, method, 307, {"Location": f"{self.blob_redirect}/{digest}?signed=1"})
        self._send(handler, method, 200, {"Content-Type": "application/octet-stream"}, self.blobs[digest])

    def _rate_limit_headers(self, method: str) -> dict[str, str]:
        with self.lock:
            if self.rate_limit is None:
                return {}
            limit, remaining, window = self.rate_limit
            if method == "GET":
                self.rate_limit[1] = remaining = max(0, remaining - 1)
        return {"ratelimit-limit": f"{limit};w={window}", "ratelimit-remaining": f"{remaining};w={window}"}

    def _challenge(self, authorization: str, repository: str) -> str | None:
        scope = f"repository:{repository}:pull"
        if self.auth == "bearer":
            with self.lock:
                valid = scope in self.tokens.get(authorization.removeprefix("Bearer "), set())
            if authorization.startswith("Bearer ") and valid:
                return None
            return f'Bearer realm="{self.realm}",service="{self.service}",scope="{scope}"'
        if self.auth == "basic" and authorization not in [basic(*user) for user in self.users.items()]:
            return 'Basic realm="fake registry"'
        return None

    def _token(self, handler: _Handler, query: dict[str, str], scopes: tuple[str, ...]) -> None:
        with self.lock:
            scripted = self.token_scripted.pop(0) if self.token_scripted else None
        if scripted:
            return self._send(handler, "GET", *scripted)
        if (query.get("service") != self.service or not scopes
                or not all(re.fullmatch(r"repository:[a-z0-9/._-]+:pull", scope) for scope in scopes)):
            return self._send(handler, "GET", 400)
        authorization = handler.headers.get("Authorization")
        known = [basic(*user) for user in self.users.items()]
        if (authorization is None and not self.anonymous_tokens) or (authorization and authorization not in known):
            return self._send(handler, "GET", 401)
        granted = set(scopes) if self.multi_scope is True else {scopes[-1] if self.multi_scope == "last" else scopes[0]}
        with self.lock:
            token = f"token-{len(self.tokens)}"
            if self.jwt:
                access = [{"type": "repository", "name": scope.split(":")[1], "actions": ["pull"]}
                          for scope in sorted(granted)]
                claims = base64.urlsafe_b64encode(json.dumps({"access": access}).encode()).decode().rstrip("=")
                token = f"eyJhbGciOiJub25lIn0.{claims}.{len(self.tokens)}"
            self.tokens[token] = granted
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self._send(handler, "GET", 200, {"Content-Type": "application/json"}, body)

    def _send(self, handler: _Handler, method: str, status: int, headers: dict[str, str] | None = None,
              body: bytes = b"") -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        # Like real registries, HEAD answers carry the length of the body they leave out.
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method == "GET":
            handler.wfile.write(body)
        if self.drop_connections:
            # Close without saying so, as a registry does with idle keep-alive connections.
            handler.close_connection = True

    def _trickle(self, handler: _Handler, headers: dict[str, str]) -> None:
        lines = ["HTTP/1.1 200 OK", *(f"{name}: {value}" for name, value in headers.items()), "Content-Length: 0"]
        for byte in ("\r\n".join(lines) + "\r\n\r\n").encode():
            if self.released.wait(self.trickle):
                return
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeRegistry

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        # Like Go's net/http: a TLS handshake on a plain-HTTP port gets a plain-HTTP 400.
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first == b"\x16":
            self.connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
            return
        super().handle()

    def do_HEAD(self) -> None:
        self.fake.serve(self, "HEAD")

    def do_GET(self) -> None:
        self.fake.serve(self, "GET")
