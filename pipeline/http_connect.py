"""The socket layer of the fetcher: a per-process DNS cache, connecting only to addresses the
network policy allows (checked on the address actually connected to, so a DNS answer cannot
change between the check and the connect), the watchdog and reaper that shut a socket at its
row's deadline, and `http.client` connections that use all of it. pipeline/http_session.py
builds requests, pooling and redirects on top."""

from __future__ import annotations

import functools
import heapq
import http.client
import itertools
import os
import select
import socket
import ssl
import threading
import time

from .fetch_config import FetchError
from .net_policy import NetworkPolicy

DNS_TTL = 30.0  # seconds a resolved host name is reused
DNS_FAIL_TTL = 1.0  # a failed lookup is reused this long (a burst of rows of a dead host)


class _Watchdog:
    """Shuts down every socket of one fetch attempt when the row's deadline passes.

    A per-read socket timeout does not bound a server that drips one byte every few seconds
    (slowloris), in the headers or the body: each read succeeds, so the row would hang for
    hours. Closing the sockets from another thread makes the blocked read return at once.
    One thread per process (`_REAPER`) serves every watchdog: no timer thread per request.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic() value
        self.expired = False
        self.done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        _REAPER.add(self)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def finish(self) -> bool:
        """Stops watching; True when the deadline passed first (the sockets are shut)."""
        with self._lock:
            self.done = True
            self._sockets = []
            return self.expired


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Reaper:
    """The thread that expires watchdogs in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watchdog]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._pid: int | None = None

    def add(self, watchdog: _Watchdog) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked child without the thread
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, name="fetch-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (watchdog.deadline, next(self._seq), watchdog))
            if self._heap[0][2] is watchdog:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    heapq.heappop(self._heap)[2].expire()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_REAPER = _Reaper()


class _DnsCache:
    """Host name -> addresses, looked up once per process per `DNS_TTL` (failures too, for
    `DNS_FAIL_TTL`), one lookup at a time per name however many threads ask."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[float, list | OSError]] = {}
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int) -> list:
        key = (host, port)
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            with self._lock:
                lock = self._locks.setdefault(key, threading.Lock())
            with lock:
                entry = self._entries.get(key)
                if entry is None or entry[0] <= time.monotonic():
                    try:
                        found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
                        entry = (time.monotonic() + DNS_TTL, found)
                    except OSError as exc:
                        entry = (time.monotonic() + DNS_FAIL_TTL, exc)
                    self._entries[key] = entry
        if isinstance(entry[1], OSError):
            raise type(entry[1])(*entry[1].args)
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


DNS = _DnsCache()


def _connect(
    address: tuple[str, int], timeout, source_address=None, policy: NetworkPolicy | None = None
) -> socket.socket:
    """`socket.create_connection` over the cached addresses, each checked against `policy`
    before it is connected to: the address checked is the address connected to."""
    error: OSError | None = None
    blocked: str | None = None
    for family, kind, proto, _, sockaddr in DNS.resolve(*address):
        why = policy.blocked(sockaddr[0]) if policy is not None else None
        if why is not None:
            blocked = blocked or why
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    if error is None and blocked is not None:
        raise FetchError("blocked_address", f"{address[0][:60]}: {blocked}")
    raise error or OSError(f"no address for {address[0]}")


def check_target(host: str, port: int, policy: NetworkPolicy) -> None:
    """For a connection made by someone else (a proxy, another library): every address `host`
    resolves to here must be allowed. The other party resolves it again, so this narrows what a
    manifest can reach but, unlike `_connect`, does not close the DNS-rebinding gap. A host
    that does not resolve here is left to the other party."""
    try:
        infos = DNS.resolve(host, port)
    except OSError:
        return
    for *_, sockaddr in infos:
        why = policy.blocked(sockaddr[0])
        if why is not None:
            raise FetchError("blocked_address", f"{host[:60]}: {why}")


class _HttpConnection(http.client.HTTPConnection):
    def __init__(self, *args, policy: NetworkPolicy | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # http.client's hook for opening the socket
        self._create_connection = functools.partial(_connect, policy=policy)


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:  # loading the CA store costs milliseconds: once per process
        _SSL = ssl.create_default_context()
    return _SSL


class _HttpsConnection(http.client.HTTPSConnection):
    def __init__(self, *args, policy: NetworkPolicy | None = None, **kwargs) -> None:
        super().__init__(*args, context=_ssl_context(), **kwargs)
        self._create_connection = functools.partial(_connect, policy=policy)


def _dropped(sock: socket.socket | None) -> bool:
    """An idle pooled connection with anything to read has been closed by the server (EOF) or
    holds bytes no request asked for: either way it is not reused."""
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
