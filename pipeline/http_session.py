"""HTTP/1.1 for the fetcher: keep-alive connections pooled per (scheme, host, port), an optional
per-host cap, redirects checked hop by hop, Retry-After, and every request held to its row's
deadline (the socket layer, DNS cache, network policy and watchdog are
pipeline/http_connect.py). Built on the standard library's `http.client` (faster here than
urllib3, BENCHMARKS.md)."""

from __future__ import annotations

import email.utils
import http.client
import string
import threading
import time
import urllib.request
from urllib.parse import quote, urljoin, urlsplit

from .fetch_config import DEFAULT_FETCH, USER_AGENT, FetchConfig, FetchError
from .http_connect import (
    DNS,
    _dropped,
    _HttpConnection,
    _HttpsConnection,
    _Watchdog,
    check_target,
)

__all__ = ["DNS", "Session", "check_target"]  # DNS: tests clear the process's cache

MAX_REDIRECTS = 5
DRAIN_BYTES = 64 << 10  # an error or redirect body up to this size is read to keep the connection
HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}


def _retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 10**6))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class _Redirect:
    def __init__(self, location: str) -> None:
        self.location = location


class _Stale(Exception):
    """A reused connection the server had closed before our request: try a new one."""


class _Row:
    """A row's deadline: it starts when the row first gets a connection slot, so that waiting
    behind other rows of a capped host does not use it up."""

    def __init__(self) -> None:
        self.deadline: float | None = None


def _timeout(config: FetchConfig) -> FetchError:
    return FetchError("timeout", f"no complete body within {config.deadline:g} s")


def _as_fetch_error(exc: BaseException, config: FetchConfig) -> FetchError:
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, TimeoutError):
        return FetchError("timeout", f"no data for {config.timeout:g} s")
    if isinstance(exc, OSError):  # refused, reset, DNS failure, TLS verification, ...
        return FetchError("connection_error", str(exc)[:100])
    return FetchError("http_error", f"{type(exc).__name__}: {exc}"[:100])


class Session:
    """What the fetch threads of one task share: keep-alive connections per (scheme, host,
    port) and, with `per_host`, a cap on requests in flight per host. Thread-safe."""

    def __init__(self, config: FetchConfig = DEFAULT_FETCH) -> None:
        self.per_host = config.per_host
        self.timeout = config.timeout
        self.max_idle = max(1, config.per_host or config.threads)
        self.opened = 0  # connections opened, for tests and benchmarks
        # (policy, (scheme, host, port[, proxy host, proxy port])) -> idle connections
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._proxies = urllib.request.getproxies()  # http_proxy, https_proxy, no_proxy

    def proxy_for(self, scheme: str, host: str) -> tuple[str, int] | None:
        """The (host, port) of the proxy the environment names for this URL, as urllib and
        every other HTTP client honour it (`http_proxy`, `https_proxy`, `no_proxy`)."""
        url = self._proxies.get(scheme)
        if not url or urllib.request.proxy_bypass(host):
            return None
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname:
            return None
        return parts.hostname, parts.port or 80

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def fetch(self, url: str, config: FetchConfig) -> bytes:
        """The body of `url` (http/https), following redirects, retrying what is retryable,
        within the row's deadline."""
        row = _Row()
        wait = config.backoff
        for attempt in range(config.retries + 1):
            try:
                return self._follow(url, config, row)
            except FetchError as exc:
                if exc.reason not in RETRYABLE or attempt == config.retries:
                    raise
                pause = max(wait, getattr(exc, "retry_after", None) or 0.0)
                deadline = row.deadline or time.monotonic() + config.deadline
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                wait *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow(self, url: str, config: FetchConfig, row: _Row) -> bytes:
        visited = {url}
        for _ in range(MAX_REDIRECTS + 1):
            result = self._request(url, config, row)
            if not isinstance(result, _Redirect):
                return result
            target = urljoin(url, quote(result.location, safe=string.punctuation))
            if urlsplit(target).scheme not in ("http", "https"):
                raise FetchError("bad_redirect", f"redirect to {target[:100]}")
            if target in visited:
                raise FetchError("redirect_loop", f"{target[:80]} again")
            visited.add(target)
            url = target
        raise FetchError("redirect_loop", f"more than {MAX_REDIRECTS} redirects")

    def _slot(self, host: str) -> threading.BoundedSemaphore | None:
        if not self.per_host:
            return None
        with self._lock:
            return self._slots.setdefault(host, threading.BoundedSemaphore(self.per_host))

    def _request(self, url: str, config: FetchConfig, row: _Row) -> bytes | _Redirect:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise FetchError("bad_url", f"bad port in {url[:100]}") from None
        host = parts.hostname
        if not host:
            raise FetchError("bad_url", f"no host in {url[:100]}")
        key = (parts.scheme, host, port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        policy = config.network_policy
        proxy = self.proxy_for(parts.scheme, host)
        if proxy is not None:  # the proxy connects to the host: check it as resolved here
            check_target(host, key[2], policy)
            key = (*key, *proxy)
            if parts.scheme == "http":  # a forward proxy takes the absolute URL
                target = f"http://{parts.netloc}{target}"
        slot = self._slot(host)
        if slot is not None:
            if row.deadline is None:
                slot.acquire()  # each holder keeps it at most one deadline
            elif not slot.acquire(timeout=max(0.0, row.deadline - time.monotonic())):
                raise FetchError("timeout", f"no free slot for {host[:60]} within the deadline")
        try:
            if row.deadline is None:
                row.deadline = time.monotonic() + config.deadline
            return self._exchange((policy, key), target, config, row.deadline)
        finally:
            if slot is not None:
                slot.release()

    def _checkout(self, pool: tuple) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection of `pool` = (network policy, (scheme, host, port[, proxy])), or
        a new one whose addresses that policy checks (a proxy's own address is the user's
        choice and is not checked)."""
        while True:
            with self._lock:
                idle = self._idle.get(pool)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if not _dropped(conn.sock):
                return conn, True
            conn.close()
        policy, key = pool
        cls = _HttpsConnection if key[0] == "https" else _HttpConnection
        with self._lock:
            self.opened += 1
        if len(key) == 3:
            return cls(key[1], key[2], timeout=self.timeout, policy=policy), False
        conn = cls(key[3], key[4], timeout=self.timeout)  # through the proxy
        if key[0] == "https":
            conn.set_tunnel(key[1], key[2])  # CONNECT; TLS and its checks end to end
        return conn, False

    def _checkin(self, pool: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(pool, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _exchange(
        self, pool: tuple, target: str, config: FetchConfig, deadline: float
    ) -> bytes | _Redirect:
        """One request on a pooled or new connection; the connection goes back to the pool
        only when the response was read to its end, without error, within the deadline."""
        for _ in range(2):  # a stale reused connection gets one retry on a new one
            conn, reused = self._checkout(pool)
            watchdog = _Watchdog(deadline)
            try:
                result, reusable = _talk(conn, target, config, deadline, watchdog, reused)
            except _Stale:
                expired = watchdog.finish()
                conn.close()
                if expired:
                    raise _timeout(config) from None
                continue
            except Exception as exc:
                expired = watchdog.finish()
                conn.close()
                if expired:  # a shut-down socket reads as a clean end or a reset
                    raise _timeout(config) from None
                raise _as_fetch_error(exc, config) from None
            if watchdog.finish():
                conn.close()
                raise _timeout(config)
            if reusable:
                self._checkin(pool, conn)
            else:
                conn.close()
            if isinstance(result, FetchError):
                raise result
            return result
        raise FetchError("connection_error", "server closed the connection twice")


def _talk(
    conn: http.client.HTTPConnection,
    target: str,
    config: FetchConfig,
    deadline: float,
    watchdog: _Watchdog,
    reused: bool,
) -> tuple[bytes | _Redirect | FetchError, bool]:
    """(body, redirect or HTTP error; whether the connection may be reused)."""
    if conn.sock is None:
        conn.connect()
    watchdog.watch(conn.sock)
    try:
        conn.request("GET", target, headers=HEADERS)
        response = conn.getresponse()
    except ConnectionError:
        if reused:
            raise _Stale() from None
        raise
    status = response.status
    if 200 <= status < 300:
        return _read_body(response, config, deadline), _finished(response)
    location = response.getheader("Location") if 300 <= status < 400 else None
    if location:
        result = _Redirect(location)
    else:
        result = FetchError(f"http_{status}", str(response.reason)[:100])
        if status in (429, 503):
            result.retry_after = _retry_after(response.getheader("Retry-After"))
    return result, _drain(response, deadline)


def _read_body(response: http.client.HTTPResponse, config: FetchConfig, deadline: float) -> bytes:
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > config.max_bytes:
        raise FetchError("too_large", f"Content-Length {length} > {config.max_bytes}")
    chunks, total = [], 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError("timeout", f"no complete body within {config.deadline:g} s")
        chunk = response.read1(1 << 16)  # returns what has arrived, not 64 KiB
        if not chunk:
            break
        total += len(chunk)
        if total > config.max_bytes:
            raise FetchError("too_large", f"body over {config.max_bytes} bytes")
        chunks.append(chunk)
    if length and length.isdigit() and total != int(length):
        raise FetchError("short_body", f"{total} bytes, Content-Length said {length}")
    return b"".join(chunks)


def _finished(response: http.client.HTTPResponse) -> bool:
    """Whether the response was read to its end and the server keeps the connection open."""
    done = response.isclosed() or response.length == 0
    response.close()  # closes the response's reader, not the connection's socket
    return done and not response.will_close


def _drain(response: http.client.HTTPResponse, deadline: float) -> bool:
    """Reads a small error or redirect body so that the connection can be reused."""
    length = response.getheader("Content-Length")
    if response.will_close or not (response.chunked or (length and length.isdigit())):
        response.close()
        return False
    total = 0
    while total <= DRAIN_BYTES and time.monotonic() < deadline:
        chunk = response.read1(1 << 14)
        if not chunk:
            return _finished(response)
        total += len(chunk)
    response.close()
    return False


RETRYABLE = (
    "timeout",
    "connection_error",
    "short_body",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
)
