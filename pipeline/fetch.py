"""Fetching image bytes: http(s) URLs, local or fsspec paths, inline bytes.

Failures raise `FetchError` with a short machine-readable reason (`http_404`, `timeout`,
`too_large`, `short_body`, `missing_file`, `bad_scheme`, ...) that lands in the rejects table.
Time and memory per row are bounded: a socket timeout per read, an overall deadline enforced by
a watchdog that shuts the sockets (so a server dripping bytes cannot hold a row), a byte cap.
"""

from __future__ import annotations

import http.client
import os
import posixpath
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import fsspec

from .rejects import RowReject

USER_AGENT = "weakly-ingest/0.1 (+dataset builder)"


class FetchError(RowReject):
    """A row rejected while fetching its bytes."""


@dataclass(frozen=True)
class FetchConfig:
    timeout: float = 10.0  # seconds per socket operation
    deadline: float = 30.0  # seconds for the whole row, retries included
    retries: int = 2
    backoff: float = 0.5  # first retry waits this long, then doubles
    max_bytes: int = 32 << 20
    threads: int = 16
    path_root: str | None = None  # when set, `path` rows must name files inside it


def resolve_path(path: str, root: str | None) -> str:
    """The file a manifest `path` names, confined to `root` when one is set.

    With a root, a manifest can only name files under it: absolute paths, other URLs, `..`
    escapes and (locally) symlinks pointing out are `path_outside_root`, so a hostile manifest
    cannot pull arbitrary files of the ingest machine into the shards.
    """
    if root is None:
        return path
    if "\x00" in path:
        raise FetchError("bad_path", "path contains a NUL byte")
    if "://" in path or path.startswith(("/", "\\")) or os.path.isabs(path):
        raise FetchError("path_outside_root", f"{path[:200]} is absolute; paths are under the root")
    if "://" in root:
        norm = posixpath.normpath(path)
        if norm == ".." or norm.startswith("../"):
            raise FetchError("path_outside_root", f"{path[:200]} leaves {root}")
        return f"{root.rstrip('/')}/{norm}"
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, path))
    if os.path.commonpath([base, full]) != base:
        raise FetchError("path_outside_root", f"{path[:200]} leaves {root}")
    return full


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError("bad_redirect", f"redirect to {newurl[:100]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Watchdog:
    """Shuts down every socket of one fetch when its deadline passes.

    A per-read socket timeout does not bound a server that drips one byte every few seconds
    (slowloris), in the headers or the body: each read succeeds, so the row would hang for
    hours. Closing the sockets from a timer thread makes the blocked read return at once.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _watched(base: type, watchdog: _Watchdog) -> type:
    class Connection(base):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    return Connection


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    http_class = _watched(http.client.HTTPConnection, watchdog)
    https_class = _watched(http.client.HTTPSConnection, watchdog)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_class, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_class, req)

    return urllib.request.build_opener(_HttpOnlyRedirects, Http, Https)


def _http_once(url: str, config: FetchConfig, deadline: float) -> bytes:
    with _Watchdog(deadline - time.monotonic()) as watchdog:
        try:
            data = _http_read(url, config, deadline, watchdog)
        except FetchError:
            if not watchdog.expired:
                raise
            data = None
        if watchdog.expired:  # a shut-down socket reads as a clean end of body
            raise FetchError("timeout", f"no complete body within {config.deadline:g} s")
        return data


def _http_read(url: str, config: FetchConfig, deadline: float, watchdog: _Watchdog) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _opener(watchdog).open(request, timeout=config.timeout) as response:
            length = response.headers.get("Content-Length")
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
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # urllib refused to follow: a non-http target or a loop
            target = (exc.headers or {}).get("Location", "") if exc.headers else ""
            if target and urlsplit(target).scheme not in ("", "http", "https"):
                raise FetchError("bad_redirect", f"redirect to {target[:100]}") from None
            raise FetchError("redirect_loop", str(exc.reason)[:100]) from None
        raise FetchError(f"http_{exc.code}", str(exc.reason)[:100]) from None
    except TimeoutError:
        raise FetchError("timeout", f"no data for {config.timeout:g} s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FetchError):
            raise exc.reason from None
        if isinstance(exc.reason, TimeoutError | socket.timeout):
            raise FetchError("timeout", f"connect over {config.timeout:g} s") from None
        raise FetchError("connection_error", str(exc.reason)[:100]) from None
    except (ConnectionError, OSError) as exc:
        raise FetchError("connection_error", str(exc)[:100]) from None
    except Exception as exc:
        if isinstance(exc, FetchError):
            raise
        raise FetchError("http_error", f"{type(exc).__name__}: {exc}"[:100]) from None


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


def fetch_url(url: str, config: FetchConfig = FetchConfig()) -> bytes:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"{scheme or 'no'} scheme; only http and https")
    deadline = time.monotonic() + config.deadline
    wait = config.backoff
    for attempt in range(config.retries + 1):
        try:
            return _http_once(url, config, deadline)
        except FetchError as exc:
            last = exc
            if exc.reason not in RETRYABLE or attempt == config.retries:
                raise
            if time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
            wait *= 2
    raise last  # pragma: no cover - loop always returns or raises


def fetch_path(path: str, config: FetchConfig = FetchConfig()) -> bytes:
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read(config.max_bytes + 1)
    except FileNotFoundError:
        raise FetchError("missing_file", path[:200]) from None
    except IsADirectoryError:
        raise FetchError("not_a_file", path[:200]) from None
    except Exception as exc:
        raise FetchError("read_error", f"{type(exc).__name__}: {exc}"[:200]) from None
    if len(data) > config.max_bytes:
        raise FetchError("too_large", f"file over {config.max_bytes} bytes")
    return data


def fetch_one(
    ref: tuple[str | None, str | None, bytes | None], config: FetchConfig
) -> bytes | FetchError:
    """Bytes for one (url, path, inline) reference, or the FetchError saying why not."""
    url, path, inline = ref
    try:
        if inline is not None:
            if len(inline) > config.max_bytes:
                raise FetchError("too_large", "inline image over the byte cap")
            return inline
        if url:
            return fetch_url(url, config)
        if path:
            return fetch_path(resolve_path(path, config.path_root), config)
        raise FetchError("no_image", "row has no url, path or image bytes")
    except FetchError as exc:
        return exc


def fetch_iter(
    refs: list[tuple[str | None, str | None, bytes | None]], config: FetchConfig
) -> Iterator[bytes | FetchError]:
    """Results in input order, yielded as soon as each is ready, so the caller decodes one
    image while the thread pool is still fetching the next ones."""
    if not any(r[0] for r in refs) or config.threads <= 1:
        for ref in refs:
            yield fetch_one(ref, config)
        return
    with ThreadPoolExecutor(max_workers=config.threads) as pool:
        yield from pool.map(lambda ref: fetch_one(ref, config), refs)
