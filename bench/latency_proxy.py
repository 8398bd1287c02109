"""A loopback TCP proxy that delays every byte by a fixed time each way and counts HTTP requests.

In front of a loopback registry it makes lookups cost what they cost over a
network: with 25 ms each way, every request/answer exchange takes a 50 ms round
trip. Connection set-up is not delayed (the client's connect to the proxy is
instant), so a new TCP or TLS connection costs nothing extra here, unlike on a
real network.

Requests are counted by method and kind (`GET manifest`, `HEAD manifest`,
`GET blob`, `GET ping` for `/v2/`, …) by parsing the client-to-server stream
of each connection: HTTP/1.1 with keep-alive, bodies skipped by Content-Length.
Also counted: `connection`, and `TLS hello` for a connection that starts a TLS
handshake (the plain-HTTP registry answers it with an error).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

# A request head bigger than this is not what skopeo or cipug send: stop parsing that connection.
_HEAD_MAX = 64 * 1024
_CHUNK = 64 * 1024
# Chunks in flight per direction; beyond that the reader waits (back-pressure, bounded memory).
_QUEUE_MAX = 256
_CONNECT_TIMEOUT = 5.0
_TLS_HANDSHAKE = b"\x16"  # first byte of a TLS record carrying a ClientHello
_START_TIMEOUT = 10.0

_KINDS = (
    (re.compile(r"/v2/?"), "ping"),
    (re.compile(r"/v2/.+/manifests/[^/]+"), "manifest"),
    (re.compile(r"/v2/.+/blobs/[^/]+"), "blob"),
    (re.compile(r"/v2/.+/tags/list"), "tags"),
    (re.compile(r"/token"), "token"),
)


def request_kind(target: str) -> str:
    path = target.split("?", 1)[0]
    for pattern, kind in _KINDS:
        if pattern.fullmatch(path):
            return kind
    return "other"


class RequestParser:
    """Feeds on one connection's client-to-server bytes and reports each request as `METHOD kind`."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report
        self._buffer = bytearray()
        self._body_left = 0
        self._lost = False

    def feed(self, data: bytes) -> None:
        if self._lost:
            return
        self._buffer += data
        while True:
            if self._body_left:
                skipped = min(self._body_left, len(self._buffer))
                del self._buffer[:skipped]
                self._body_left -= skipped
                if self._body_left:
                    return
            # Tolerate the blank lines RFC 9112 lets clients send between requests.
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            if self._buffer[:1] == _TLS_HANDSHAKE:
                # skopeo tries HTTPS first even for a registry marked insecure.
                self._give_up("TLS hello")
                return
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _HEAD_MAX:
                    self._give_up()
                return
            head = self._buffer[:end].decode("latin-1")
            del self._buffer[: end + 4]
            self._request(head)
            if self._lost:
                return

    def _request(self, head: str) -> None:
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._give_up()
            return
        self._report(f"{parts[0]} {request_kind(parts[1])}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            # Neither skopeo inspect nor cipug sends request bodies; not worth parsing chunks.
            self._give_up()
            return
        try:
            self._body_left = int(headers.get("content-length", "0"))
        except ValueError:
            self._give_up()

    def _give_up(self, what: str = "unparsed") -> None:
        self._lost = True
        self._buffer.clear()
        self._report(what)


async def _all(*coroutines: Awaitable[None]) -> None:
    """Run together; when one fails, cancel the rest instead of leaving them blocked."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


class LatencyProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:`target_port`, `delay` seconds each way.

    Runs its own event loop in a thread; use as a context manager. `delay` may be
    changed between runs; `take_counts()` returns the requests counted since the last call.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        # The loop and the stream protocols hold connection tasks only weakly once a client
        # has gone: without these references a half-closed connection is garbage-collected.
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = started.result(_START_TIMEOUT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(_START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_START_TIMEOUT)
        self._loop.close()

    def take_counts(self) -> Counter[str]:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self._connections, return_exceptions=True), _START_TIMEOUT)
        await self._server.wait_closed()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._count("connection")
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._forward(client_reader, client_writer)
        finally:
            self._connections.discard(task)

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), _CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            client_writer.close()
            return
        parser = RequestParser(self._count)
        try:
            await _all(self._pipe(client_reader, server_writer, parser.feed),
                       self._pipe(server_reader, client_writer, None))
        except OSError:
            pass  # a reset by either side ends the connection, as it would without the proxy
        finally:
            client_writer.close()
            server_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    observe: Callable[[bytes], None] | None) -> None:
        """Copy one direction, each chunk delivered `delay` after it was read; EOF too."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_MAX)

        async def receive() -> None:
            while True:
                data = await reader.read(_CHUNK)
                if observe is not None and data:
                    observe(data)
                await queue.put((loop.time() + self.delay, data))
                if not data:
                    return

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        await _all(receive(), deliver())
