"""Fetch throughput and CPU per fetch: the pooled keep-alive fetcher vs the old urllib one.

A loopback `ThreadingHTTPServer` speaking HTTP/1.1 (keep-alive, TCP_NODELAY) serves ~30 KB JPEGs from its
own process, so the client's CPU time is the fetcher's alone. Each path fetches the same URLs
with the same thread count; the old path is `pipeline/fetch.py` as of BASELINE (a new urllib
connection per request, a timer thread per request), read from git. With urllib3 installed, a
bare `PoolManager` loop (no watchdog, no byte cap) is printed as a reference point.

    .venv/bin/python benchmarks/fetch_speed.py [--n 2000] [--threads 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import fetch as new_fetch  # noqa: E402

BASELINE = "00a5526"  # the commit before the keep-alive fetcher


def jpeg_30k() -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).resize((320, 240))
    for quality in range(95, 10, -5):
        out = io.BytesIO()
        img.save(out, "JPEG", quality=quality)
        if out.tell() <= 32_000:
            return out.getvalue()
    return out.getvalue()


def serve() -> None:
    """Server process: prints its port, serves until stdin closes; /stats gives connections."""
    body = jpeg_30k()
    stats = {"connections": 0, "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            stats["connections"] += 1
            # As nginx and CDNs do on keep-alive connections: without it the body write waits
            # for the client's delayed ACK of the header write (~40 ms per response).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            data = body
            if self.path == "/stats":
                data = json.dumps(stats).encode()
            else:
                stats["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.request_queue_size = 256
    server.daemon_threads = True
    server.server_bind()
    server.server_activate()
    print(server.server_address[1], flush=True)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


def old_module():
    """pipeline/fetch.py at BASELINE, imported as pipeline._fetch_baseline."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:pipeline/fetch.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "fetch_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pipeline._fetch_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stats(base: str) -> dict:
    return json.loads(new_fetch.fetch_url(base + "/stats", new_fetch.FetchConfig()))


def run(name: str, fetch_all, urls: list[str], base: str, size: int) -> dict:
    before = stats(base)
    cpu, wall = time.process_time(), time.perf_counter()
    results = fetch_all(urls)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = stats(base)
    assert all(isinstance(r, bytes) and len(r) == size for r in results), name
    return {
        "name": name,
        "fetches_per_s": len(urls) / wall,
        "cpu_ms_per_fetch": 1000 * cpu / len(urls),
        "connections": after["connections"] - before["connections"] - 1,  # less the /stats call
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per path")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline())}"
        size = len(jpeg_30k())
        urls = [f"{base}/img/{i}.jpg" for i in range(args.n)]
        old = old_module()
        config = new_fetch.FetchConfig(threads=args.threads)
        old_config = old.FetchConfig(threads=args.threads)

        def old_all(batch):
            return list(old.fetch_iter([(u, None, None) for u in batch], old_config))

        def new_all(batch):
            return list(new_fetch.fetch_iter([(u, None, None) for u in batch], config))

        paths = [("old urllib", old_all), ("new pooled", new_all)]
        try:
            import urllib3

            def urllib3_all(batch):
                manager = urllib3.PoolManager(maxsize=args.threads, block=True, retries=False)
                with ThreadPoolExecutor(args.threads) as pool:
                    return list(pool.map(lambda u: manager.request("GET", u).data, batch))

            paths.append(("urllib3 PoolManager (reference)", urllib3_all))
        except ImportError:
            pass
        best: dict[str, dict] = {}
        for _ in range(args.repeat):
            for name, fetch_all in paths:
                result = run(name, fetch_all, urls, base, size)
                if name not in best or result["fetches_per_s"] > best[name]["fetches_per_s"]:
                    best[name] = result
        print(f"{args.n} fetches of {size} B, {args.threads} threads, loopback HTTP/1.1 server")
        print(f"{'path':34s} {'fetches/s':>10s} {'CPU ms/fetch':>13s} {'TCP conns':>10s}")
        for r in best.values():
            print(
                f"{r['name']:34s} {r['fetches_per_s']:10.0f} {r['cpu_ms_per_fetch']:13.3f}"
                f" {r['connections']:10d}"
            )
        o, n = best["old urllib"], best["new pooled"]
        print(
            f"new/old: {n['fetches_per_s'] / o['fetches_per_s']:.2f}x fetches/s, "
            f"{o['cpu_ms_per_fetch'] / n['cpu_ms_per_fetch']:.2f}x less CPU per fetch"
        )
    finally:
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
