"""The network path of the fetcher, seen from real loopback servers: keep-alive connections are
reused (fewer TCP connections than requests) and dropped when a response was not read to its
end; a per-host cap holds however many threads fetch; `Retry-After` is honoured within the
row's deadline; host names are resolved once; and pass 2, which decodes rows in the order their
fetches complete, writes the same bytes as when they complete in row order."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pytest
from hostile_http import GOOD, HostileServer
from ingest_fixtures import encode, photo

from pipeline import http_connect, pass2
from pipeline import http_session as fetch_module
from pipeline.fetch import FetchConfig, FetchError, Session, fetch_completed, fetch_iter, fetch_url
from pipeline.images import ImageConfig
from pipeline.ingest_config import IngestConfig
from pipeline.parquet_io import put_parquet
from pipeline.weights import Law
from pipeline.work_layout import labelled_part
from weakly_base.storage import Store

CONFIG = FetchConfig(timeout=2.0, deadline=10.0, retries=1, backoff=0.05, max_bytes=1 << 20)
BODIES = {f"/img/{i}": encode(photo(i % 6, 80), "JPEG", quality=85) for i in range(12)}


class Server:
    """An HTTP/1.1 keep-alive server that counts TCP connections, requests in flight (and the
    most at once), and can answer 429s, hold a path until others are served, or send too much."""

    def __init__(self) -> None:
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests: list[tuple[str, float]] = []
        self.hold_first: threading.Event | None = None  # hold /img/0 until this is set
        self.wait_for_company = 0  # hold each request until this many are in flight (or 0.3 s)
        self.throttled: dict[str, str] = {}  # path -> Retry-After value of its first answer
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with outer.cond:
                    outer.connections += 1

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.httpd.request_queue_size = 64
        self.httpd.daemon_threads = True
        self.httpd.server_bind()
        self.httpd.server_activate()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        with self.cond:
            self.requests.append((path, time.monotonic()))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.cond.notify_all()
            if self.wait_for_company:
                self.cond.wait_for(lambda: self.in_flight >= self.wait_for_company, timeout=0.3)
        if path == "/img/0" and self.hold_first is not None:
            self.hold_first.wait(timeout=20)  # a consumer waiting for row 0 would stall here
        with self.cond:
            first = sum(p == path for p, _ in self.requests) == 1
        try:
            if path in self.throttled and first:
                h.send_response(429)
                h.send_header("Retry-After", self.throttled[path])
                h.send_header("Content-Length", "0")
                h.end_headers()
            elif path == "/big":  # over the test's byte cap: the fetcher stops reading
                h.send_response(200)
                h.send_header("Content-Length", str(4 << 20))
                h.end_headers()
                h.wfile.write(b"\xff" * (4 << 20))
            else:
                body = BODIES.get(path, GOOD)
                h.send_response(200)
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)
        except OSError:
            pass  # the fetcher hung up (a byte cap)
        finally:
            with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_connections_are_reused_across_requests_and_threads(server):
    refs = [(f"{server.url}/img/{i % 12}", None, None) for i in range(60)]
    results = list(fetch_iter(refs, FetchConfig(threads=4)))
    assert results == [BODIES[f"/img/{i % 12}"] for i in range(60)]
    assert len(server.requests) == 60
    assert server.connections <= 4  # at most one per thread, not one per request
    with Session(CONFIG) as session:
        before = server.connections
        for i in range(10):
            assert fetch_url(f"{server.url}/img/{i}", CONFIG, session) == BODIES[f"/img/{i}"]
        assert server.connections == before + 1 and session.opened == 1


def test_a_connection_not_read_to_its_end_is_never_reused(server):
    with Session(CONFIG) as session:
        assert fetch_url(server.url + "/img/1", CONFIG, session) == BODIES["/img/1"]
        with pytest.raises(FetchError) as caught:
            fetch_url(server.url + "/big", CONFIG, session)  # Content-Length over the cap
        assert caught.value.reason == "too_large"
        assert fetch_url(server.url + "/img/2", CONFIG, session) == BODIES["/img/2"]
        # /img/1 opened one; /big reused it and dropped it unread; /img/2 needed a new one
        assert session.opened == 2 and server.connections == 2


def test_a_server_that_closes_after_each_response_still_serves_every_row():
    """HostileServer answers HTTP/1.1 without `Connection: close` and then hangs up: a pooled
    connection it closed is noticed (or fails its request) and replaced, not turned into a
    rejected row."""
    with HostileServer() as hostile, Session(CONFIG) as session:
        for _ in range(6):
            assert fetch_url(hostile.url + "/good", CONFIG, session) == GOOD
        assert session.opened == 6


def test_per_host_cap_holds_however_many_threads_fetch(server):
    server.wait_for_company = 3  # uncapped, three requests meet in the server
    refs = [(f"{server.url}/img/{i}", None, None) for i in range(12)]
    assert list(fetch_iter(refs, FetchConfig(threads=8))) == [BODIES[p] for p in BODIES]
    assert server.most_in_flight >= 3
    server.most_in_flight = 0
    capped = FetchConfig(threads=8, per_host=2)
    assert list(fetch_iter(refs, capped)) == [BODIES[p] for p in BODIES]
    assert 1 <= server.most_in_flight <= 2
    assert server.connections <= 3 + 8  # the capped run used at most its 2 (+ the first run's)


def test_retry_after_is_honoured_within_the_deadline(server):
    server.throttled = {"/img/3": "1", "/img/4": "3600"}
    assert fetch_url(server.url + "/img/3", CONFIG) == BODIES["/img/3"]
    times = [t for p, t in server.requests if p == "/img/3"]
    assert len(times) == 2 and times[1] - times[0] >= 1.0  # waited what the server asked
    with pytest.raises(FetchError) as caught:  # an hour does not fit in a 10 s deadline
        fetch_url(server.url + "/img/4", CONFIG)
    assert caught.value.reason == "http_429"
    assert [p for p, _ in server.requests].count("/img/4") == 1  # given up, not hammered


def test_host_names_are_resolved_once_and_failures_still_refuse(server, monkeypatch):
    calls: list[str] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):
        calls.append(host)
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    fetch_module.DNS.clear()
    port = server.url.rsplit(":", 1)[1]
    refs = [(f"http://localhost:{port}/img/{i}", None, None) for i in range(12)]
    assert list(fetch_iter(refs, FetchConfig(threads=4))) == [BODIES[p] for p in BODIES]
    assert fetch_url(f"http://localhost:{port}/img/5", CONFIG) == BODIES["/img/5"]
    assert calls.count("localhost") == 1  # one lookup for 13 rows, two sessions
    for _ in range(2):
        with pytest.raises(FetchError) as caught:
            fetch_url(f"http://nowhere.invalid:{port}/x.jpg", CONFIG)
        assert caught.value.reason == "connection_error"
    monkeypatch.setattr(http_connect, "DNS_TTL", 0.0)  # expired entries are looked up again
    fetch_module.DNS.clear()
    fetch_url(f"http://localhost:{port}/img/5", CONFIG)
    fetch_url(f"http://localhost:{port}/img/5", CONFIG)
    assert calls.count("localhost") == 3
    fetch_module.DNS.clear()


def test_fetch_completed_yields_rows_as_they_arrive(server):
    """/img/0 is answered only once the consumer holds the 11 others: it must get them
    before row 0 (an in-order consumer would wait 20 s for row 0 and get it first)."""
    server.hold_first = threading.Event()
    refs = [(f"{server.url}/img/{i}", None, None) for i in range(12)]
    order = []
    for i, data in fetch_completed(refs, FetchConfig(threads=12)):
        assert data == BODIES[f"/img/{i}"]
        order.append(i)
        if len(order) == 11:
            server.hold_first.set()
    assert sorted(order) == list(range(12)) and order[-1] == 0


def _chunk(url: str) -> pa.Table:
    rows = []
    for i in range(12):
        rows.append(
            {
                "key": f"k{i:02d}",
                "source": "m.jsonl",
                "row": i,
                "labels": [i % 4],
                "wnids": [f"n{i % 4:08d}"],
                "tags": ["tabby"],
                "orig_key": None,
                "extra": None,
                "url": f"{url}/img/{i}" if i != 7 else f"{url}/missing-is-still-an-image",
                "path": None,
                "fetch_path": None,
                "image": None,
            }
        )
    return pa.Table.from_pylist(rows)


def test_out_of_order_completion_writes_the_same_bytes(server, tmp_path, monkeypatch):
    decoded: list[bytes] = []
    real = pass2.prepare_image

    def recording(data, config):
        decoded.append(data)
        if len(decoded) == 11 and server.hold_first is not None:
            server.hold_first.set()  # the 11 rows that arrived are decoded: release row 0
        return real(data, config)

    monkeypatch.setattr(pass2, "prepare_image", recording)
    outputs = {}
    for name, threads, hold in (("in-order", 1, False), ("out-of-order", 12, True)):
        server.hold_first = threading.Event() if hold else None
        decoded.clear()
        config = IngestConfig(
            fetch=FetchConfig(threads=threads, timeout=5.0, deadline=30.0),
            image=ImageConfig(image_size=64),
        )
        store = Store.at(tmp_path / name)
        put_parquet(store, labelled_part(0, 0), _chunk(server.url))
        # synset counts 100, 400, 1600, 6400: four weights a factor 2 apart, four buckets
        counts = np.array([100, 400, 1600, 6400])
        law = Law("inv-sqrt", "max", epoch_size=12.0, images=12, reference=0.1)
        done = pass2.process_chunk(store, 0, 0, config, counts, law, None)
        assert done == {"rows": 12, "written": {"0": 3, "1": 3, "2": 3, "3": 3},
                        "rejects": {}, "matches": {}}  # fmt: skip
        outputs[name] = {
            str(p.relative_to(tmp_path / name)): p.read_bytes()
            for p in sorted((tmp_path / name).rglob("*.*"))
        }
        if hold:  # row 0 was decoded last, after every row that arrived before it
            assert decoded[-1] == BODIES["/img/0"] and len(decoded) == 12
        else:
            assert decoded[0] == BODIES["/img/0"]
    assert outputs["in-order"] == outputs["out-of-order"]
    assert len(outputs["in-order"]) == 6  # the input, four bucket parts, the done marker


class ForwardProxy:
    """A loopback forward proxy: takes absolute-form GETs, fetches them itself, records them."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append(self.path)
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                body = opener.open(self.path, timeout=5).read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_environments_proxy_is_used_and_no_proxy_bypasses_it(server, monkeypatch):
    """`http_proxy` sends requests through the proxy in absolute form (as urllib, curl and
    pip do); `no_proxy` naming the host goes direct."""
    proxy = ForwardProxy()
    try:
        for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url)
        with Session(CONFIG) as session:
            assert fetch_url(f"{server.url}/img/2", CONFIG, session) == BODIES["/img/2"]
            assert fetch_url(f"{server.url}/img/3", CONFIG, session) == BODIES["/img/3"]
        assert proxy.seen == [f"{server.url}/img/2", f"{server.url}/img/3"]
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        with Session(CONFIG) as session:
            assert fetch_url(f"{server.url}/img/4", CONFIG, session) == BODIES["/img/4"]
        assert len(proxy.seen) == 2 and server.requests[-1][0] == "/img/4"
    finally:
        proxy.close()
