"""The fetcher's network policy (`--allow-networks`, `--deny-networks`), seen from real loopback
servers that count every TCP connection they accept: a denied address, reached by a literal
URL, a host name, a redirect hop, a `path` URL or through a proxy, is rejected
`blocked_address` naming it, and the server at that address never sees a connection.

Two loopback addresses stand for "allowed" and "denied": 127.0.0.1 and 127.0.0.2 (Linux routes
all of 127.0.0.0/8 to the loopback interface). The default-denied link-local and metadata
addresses cannot be served here; their rows must be rejected before any connect is tried,
which the reason (`blocked_address`, not `timeout` or `connection_error`) shows.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ingest_fixtures import encode, photo

from pipeline import http_session
from pipeline.fetch import FetchConfig, FetchError, Session, fetch_one, fetch_url
from pipeline.ingest import IngestConfig
from pipeline.net_policy import network_policy, parse_networks
from weakly.cli import main
from weakly_base.index_tables import read_index

JPEG = encode(photo(0, 80), "JPEG", quality=85)
QUICK = dict(timeout=2.0, deadline=5.0, retries=0, max_bytes=1 << 20)
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


class CountingServer:
    """HTTP/1.1 on `host`: `/img` is a JPEG, `/to/<url>` redirects to <url>; counts the TCP
    connections it accepts and records request targets (absolute ones when used as a proxy)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.connections = 0
        self.targets: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.targets.append(self.path)
                if self.path.startswith("/to/"):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/to/") :])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(JPEG)))
                self.end_headers()
                self.wfile.write(JPEG)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                accepted = super().get_request()
                outer.connections += 1
                return accepted

        self.httpd = Server((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    allowed, denied = CountingServer("127.0.0.1"), CountingServer("127.0.0.2")
    yield allowed, denied
    allowed.close()
    denied.close()


def _reject(url: str, config: FetchConfig) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_url(url, config)
    return caught.value


def test_networks_are_normalised_and_allow_beats_deny():
    assert parse_networks("10.1.2.3/8, ::1 192.168.0.0/16,10.0.0.0/8") == (
        "10.0.0.0/8", "192.168.0.0/16", "::1/128")  # fmt: skip
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        parse_networks("10.0.0.0/33")
    with pytest.raises(ValueError, match="--deny-networks: 'example.com' is not a network"):
        FetchConfig(deny_networks=("example.com",))
    default = network_policy()
    assert default.blocked("127.0.0.1") is None and default.blocked("10.1.1.1") is None
    assert default.blocked("169.254.169.254") == (
        "169.254.169.254 is in 169.254.0.0/16 (denied by default)"
    )
    assert "fe80::/10" in default.blocked("fe80::1")
    assert "fd00:ec2::254/128" in default.blocked("fd00:ec2::254")
    assert "169.254.0.0/16" in default.blocked("::ffff:169.254.169.254")  # IPv4-mapped
    custom = FetchConfig(deny_networks=("127.0.0.0/8",), allow_networks=("127.0.0.1",))
    policy = custom.network_policy
    assert policy.blocked("127.0.0.1") is None
    assert policy.blocked("127.0.0.2") == "127.0.0.2 is in 127.0.0.0/8 (--deny-networks)"
    assert FetchConfig(allow_networks=("169.254.0.0/16",)).network_policy.blocked(
        "169.254.169.254"
    ) is None  # fmt: skip


def test_config_json_keeps_its_old_shape_unless_a_policy_is_given():
    """config.json decides whether a rerun resumes: a run without the options writes what
    runs before them wrote; with them, one normalised form however they were spelled."""
    fetch = IngestConfig().as_dict()["fetch"]
    assert "allow_networks" not in fetch and "deny_networks" not in fetch
    given = IngestConfig(fetch=FetchConfig(deny_networks=("::1", "127.0.0.1/8"))).as_dict()
    assert given["fetch"]["deny_networks"] == ["127.0.0.0/8", "::1/128"]
    same = IngestConfig(fetch=FetchConfig(deny_networks="127.0.0.0/8,::1/128")).as_dict()
    assert json.dumps(same, sort_keys=True) == json.dumps(given, sort_keys=True)


def test_a_denied_address_is_never_connected_to(servers):
    allowed, _ = servers
    assert fetch_url(allowed.url + "/img", FetchConfig(**QUICK)) == JPEG  # loopback: default ok
    assert allowed.connections == 1
    deny = FetchConfig(**QUICK, deny_networks=("127.0.0.0/8", "::1/128"))
    error = _reject(allowed.url + "/img", deny)
    assert error.reason == "blocked_address"
    assert error.detail == "127.0.0.1: 127.0.0.1 is in 127.0.0.0/8 (--deny-networks)"
    http_session.DNS.clear()
    by_name = _reject(f"http://localhost:{allowed.port}/img", deny)  # a name resolving there
    assert by_name.reason == "blocked_address" and by_name.detail.startswith("localhost: ")
    assert "127.0.0.1" in by_name.detail or "::1" in by_name.detail
    assert allowed.connections == 1  # neither rejected fetch opened a connection
    exception = FetchConfig(**QUICK, deny_networks=("127.0.0.0/8",), allow_networks=("127.0.0.1",))
    assert fetch_url(allowed.url + "/img", exception) == JPEG
    assert allowed.connections == 2


def test_redirects_are_checked_hop_by_hop(servers):
    allowed, denied = servers
    hop = f"{allowed.url}/to/{denied.url}/img"
    assert fetch_url(hop, FetchConfig(**QUICK)) == JPEG  # without a policy it is followed
    assert denied.connections == 1
    config = FetchConfig(**QUICK, deny_networks=("127.0.0.2",))
    error = _reject(hop, config)
    assert error.reason == "blocked_address"
    assert error.detail == "127.0.0.2: 127.0.0.2 is in 127.0.0.2/32 (--deny-networks)"
    assert allowed.targets.count(f"/to/{denied.url}/img") == 2  # the first hop was fetched
    assert denied.connections == 1  # the second hop never connected
    for target, address in (
        (METADATA, "169.254.169.254 is in 169.254.0.0/16 (denied by default)"),
        ("http://[fe80::1]/", "fe80::1 is in fe80::/10 (denied by default)"),
        ("http://[fd00:ec2::254]/latest/", "fd00:ec2::254 is in fd00:ec2::254/128"),
        ("http://[::ffff:169.254.170.2]/v2/credentials", "169.254.0.0/16"),
    ):
        error = _reject(f"{allowed.url}/to/{target}", FetchConfig(**QUICK))
        assert error.reason == "blocked_address" and address in error.detail, error


def test_path_urls_and_proxies_are_held_to_the_policy(servers, monkeypatch):
    allowed, denied = servers
    config = FetchConfig(**QUICK, deny_networks=("127.0.0.2",))
    for path in (f"{denied.url}/img", f"simplecache::{denied.url}/img", f"{allowed.url}/to/"
                 f"{denied.url}/img"):  # fmt: skip
        result = fetch_one((None, path, None), config)
        assert isinstance(result, FetchError) and result.reason == "blocked_address", path
        assert "127.0.0.2 is in 127.0.0.2/32" in result.detail
    assert isinstance(fetch_one((None, METADATA, None), FetchConfig(**QUICK)), FetchError)
    assert denied.connections == 0
    # http_proxy: the proxy (allowed, or not: it is the user's choice) would connect to the
    # target, so the target is checked before anything is sent to the proxy
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    proxy = CountingServer("127.0.0.1")  # a fresh count: `allowed` served the hop above
    monkeypatch.setenv("http_proxy", proxy.url)
    try:
        with Session(config) as session:
            for target in (f"{denied.url}/img", METADATA):
                with pytest.raises(FetchError) as caught:
                    fetch_url(target, config, session)
                assert caught.value.reason == "blocked_address", target
            assert proxy.connections == 0 and denied.connections == 0
            assert fetch_url(f"{allowed.url}/img", config, session) == JPEG  # via the proxy
        assert proxy.targets == [f"{allowed.url}/img"]  # absolute form: it was the proxy
    finally:
        proxy.close()


def test_ingest_records_blocked_rows_with_their_address(servers, tmp_path, lexicon_dir, ray_local):
    """Through the CLI: url rows, a redirect to the metadata address and a `path` URL, each
    rejected `blocked_address` naming the address; the allowed row is written; the policy is
    part of config.json."""
    allowed, denied = servers
    rows = [
        {"key": "ok", "url": f"{allowed.url}/img", "tags": ["#tabby"]},
        {"key": "denied-url", "url": f"{denied.url}/img", "tags": ["#tabby"]},
        {"key": "denied-hop", "url": f"{allowed.url}/to/{denied.url}/img", "tags": ["#tabby"]},
        {"key": "metadata-hop", "url": f"{allowed.url}/to/{METADATA}", "tags": ["#tabby"]},
        {"key": "denied-path", "path": f"{denied.url}/img", "tags": ["#tabby"]},
    ]
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["ingest", str(manifest), "--out", str(out), "--lexicon-dir", str(lexicon_dir),
            "--image-size", "64", "--no-progress", "--deny-networks", "127.0.0.2/32"]  # fmt: skip
    assert main(argv) == 0
    rejects = read_index(str(out), "rejects").to_pylist()
    got = {r["key"]: (r["reason"], r["detail"]) for r in rejects}
    denied_detail = "127.0.0.2: 127.0.0.2 is in 127.0.0.2/32 (--deny-networks)"
    assert got == {
        "denied-url": ("blocked_address", denied_detail),
        "denied-hop": ("blocked_address", denied_detail),
        "metadata-hop": (
            "blocked_address",
            "169.254.169.254: 169.254.169.254 is in 169.254.0.0/16 (denied by default)",
        ),
        "denied-path": ("blocked_address", denied_detail),
    }
    assert [r["key"] for r in read_index(str(out), "samples").to_pylist()] == ["ok"]
    assert denied.connections == 0
    config = json.loads((out / "config.json").read_text())
    assert config["fetch"]["deny_networks"] == ["127.0.0.2/32"]
    assert "allow_networks" not in config["fetch"]
