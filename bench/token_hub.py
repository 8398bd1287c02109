"""A loopback stand-in for Docker Hub's front: bearer tokens, rate-limit headers and the pull-limit 429.

Sits in front of a loopback docker-registry (which has no authentication of its own) and behaves as
registry-1.docker.io and auth.docker.io do for anonymous pulls:

- every /v2/ request without a token that covers its repository gets a 401 whose
  `WWW-Authenticate: Bearer realm="…/token",service="…",scope="repository:NAME:pull"` names the realm;
- GET /token grants anonymous tokens: for every `scope=` of the request at once (mode "multi", as
  Docker Hub does), or only for the first (mode "single", a token service that grants one scope per
  request). Tokens are JWTs (unsigned here) whose `access` claim lists what they grant;
- manifest answers carry `ratelimit-limit: L;w=W` and `ratelimit-remaining: R;w=W`; a manifest GET
  spends one pull, a HEAD nothing; once the budget is spent every manifest request gets a 429 with
  `Retry-After` (a GET also Docker Hub's long `toomanyrequests` body).

Everything else is forwarded to the registry unchanged. Its answers to manifest and blob requests
are kept and given again (the benchmark pushes every image before the first run): distribution 2.8
spends about 1.5 ms of CPU on each, which on a machine of 2 CPUs would be taken from the client being
measured, 50 ms per round of 32 parallel lookups; a real registry's CPU is not the client's.
`reset()` sets mode and budget between runs; `counts` tells token requests, tokens granted and
manifest requests after the first 429.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

SERVICE = "bench-hub"
WINDOW = 21600
RETRY_AFTER = 3600
PULL_LIMIT_BODY = (b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. '
                   b'You may increase the limit by authenticating and upgrading: '
                   b'https://www.docker.com/increase-rate-limits"}]}\n')
_MANIFEST = re.compile(r"/v2/(.+)/(manifests|blobs)/([^/]+)")
_FORWARD_TIMEOUT = 30.0
_BODY_MAX = 64 << 20
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _jwt(access: list[dict[str, object]], serial: int) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'access': access, 'jti': str(serial)})}.unsigned"


class TokenHub:
    """Listens on 127.0.0.1 (a free port), forwards to 127.0.0.1:`registry_port`; a context manager.

    `realm` must be set to the URL clients reach /token at (through the latency proxy).
    """

    def __init__(self, registry_port: int) -> None:
        self.registry_port = registry_port
        self.realm = ""
        self.mode = "multi"
        self.limit = 100
        self.remaining = 100
        self.counts: Counter[str] = Counter()
        self._tokens: dict[str, frozenset[str]] = {}
        # (method, path, Accept) -> the registry's 200 answer: status, headers, body, HEAD's Content-Length.
        self._answers: dict[tuple[str, str, str], tuple[int, dict[str, str], bytes, int | None]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        handler = type("Handler", (_Handler,), {"hub": self})
        # A listen backlog of 5 (socketserver's default) drops the SYNs of 32 connections opened at
        # once, and each dropped one costs a second's retransmission.
        server = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256})
        self._server = server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="token-hub",
                                        daemon=True)

    def __enter__(self) -> TokenHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def reset(self, mode: str = "multi", remaining: int | None = None) -> None:
        """Before a run: the token service's mode, a full (or the given) budget, counts and tokens cleared."""
        with self._lock:
            self.mode = mode
            self.remaining = self.limit if remaining is None else remaining
            self.counts = Counter()
            self._tokens.clear()

    def take_counts(self) -> Counter[str]:
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    # Requests.

    def serve(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        if url.path == "/token":
            return self._token(handler, parse_qsl(url.query))
        match = _MANIFEST.fullmatch(url.path)
        repository = match.group(1) if match else None
        if url.path.rstrip("/") == "/v2" or repository:
            scope = f"repository:{repository}:pull" if repository else None
            if not self._authorized(handler.headers.get("Authorization", ""), scope):
                challenge = f'Bearer realm="{self.realm}",service="{SERVICE}"' + (f',scope="{scope}"' if scope else "")
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}\n'
                return self._send(handler, method, 401, {"WWW-Authenticate": challenge,
                                                         "Content-Type": "application/json"}, body)
        if match and match.group(2) == "manifests":
            with self._lock:
                if self.counts["429 sent"]:
                    self.counts["manifest requests after a 429"] += 1
                spent = self.remaining <= 0
                if spent:
                    self.counts["429 sent"] += 1
                elif method == "GET":
                    self.remaining -= 1
                headers = {"ratelimit-limit": f"{self.limit};w={WINDOW}",
                           "ratelimit-remaining": f"{max(self.remaining, 0)};w={WINDOW}",
                           "docker-ratelimit-source": "127.0.0.1"}
            if spent:
                return self._send(handler, method, 429, {**headers, "Retry-After": str(RETRY_AFTER),
                                                         "Content-Type": "application/json"}, PULL_LIMIT_BODY)
            return self._forward(handler, method, headers)
        return self._forward(handler, method, {})

    def _authorized(self, authorization: str, scope: str | None) -> bool:
        if not authorization.startswith("Bearer "):
            return False
        with self._lock:
            granted = self._tokens.get(authorization.removeprefix("Bearer "))
        return granted is not None and (scope is None or scope in granted)

    def _token(self, handler: _Handler, query: list[tuple[str, str]]) -> None:
        scopes = [value for name, value in query if name == "scope"]
        service = dict(query).get("service")
        self._count("token requests")
        if service != SERVICE:
            return self._send(handler, "GET", 400, {}, b'{"details":"unknown service"}\n')
        granted = [scope for scope in scopes if re.fullmatch(r"repository:[a-z0-9/._-]+:pull", scope)]
        if self.mode == "single":
            granted = granted[:1]
        access = [{"type": "repository", "name": scope.split(":")[1], "actions": ["pull"]} for scope in granted]
        with self._lock:
            token = _jwt(access, len(self._tokens))
            self._tokens[token] = frozenset(granted)
            self.counts["scopes granted"] += len(granted)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        self._send(handler, "GET", 200, {"Content-Type": "application/json"}, body)

    def _forward(self, handler: _Handler, method: str, extra: dict[str, str]) -> None:
        key = (method, handler.path, ", ".join(handler.headers.get_all("Accept") or []))
        kept = _MANIFEST.fullmatch(urlsplit(handler.path).path) is not None and method in ("GET", "HEAD")
        with self._lock:
            answer = self._answers.get(key) if kept else None
        if answer is None:
            answer = self._ask_registry(handler, method)
            if kept and answer[0] == 200:
                with self._lock:
                    self._answers[key] = answer
        status, headers, data, length = answer
        self._send(handler, method, status, {**headers, **extra}, data, length=length)

    def _ask_registry(self, handler: _Handler, method: str) -> tuple[int, dict[str, str], bytes, int | None]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                "127.0.0.1", self.registry_port, timeout=_FORWARD_TIMEOUT)
        # skopeo sends one Accept header per manifest type: joined, none is lost.
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            if name.lower() not in _HOP_BY_HOP and name.lower() not in ("authorization", "host"):
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        try:
            connection.request(method, handler.path, body, headers)
            response = connection.getresponse()
            data = response.read(_BODY_MAX)
        except (OSError, http.client.HTTPException):
            connection.close()
            self._local.connection = None
            return 502, {}, b"", None
        answer = {name: value for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP}
        length_header = response.getheader("Content-Length")
        return response.status, answer, data, int(length_header) if method == "HEAD" and length_header else None

    def _send(self, handler: _Handler, method: str, status: int, headers: dict[str, str], body: bytes,
              length: int | None = None) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: TokenHub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hub.serve(self, "GET")

    def do_HEAD(self) -> None:
        self.hub.serve(self, "HEAD")
