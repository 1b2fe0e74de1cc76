"""Real files and a real loopback HTTP server for the ingest tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from weakly.photos import bundled_photos


def photo(index: int = 0, side: int = 200) -> Image.Image:
    img = bundled_photos()[index][1]
    scale = side / min(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def image_files(folder: Path) -> dict[str, Path]:
    """Every image case the ingest job must accept or reject, as real files."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(0)
    files: dict[str, bytes] = {
        "good.jpg": encode(base, "JPEG", quality=90),
        "big.jpg": encode(photo(1, 900), "JPEG", quality=90),
        "cmyk.jpg": encode(photo(2).convert("CMYK"), "JPEG"),
        "grey16.png": encode(photo(3).convert("L").point(lambda v: v * 256).convert("I;16"), "PNG"),
        "palette.png": encode(photo(4).convert("P", palette=Image.ADAPTIVE), "PNG", transparency=0),
        "alpha.png": encode(photo(5).convert("RGBA"), "PNG"),
        "webp.webp": encode(photo(6), "WEBP"),
        "truncated.jpg": encode(photo(7), "JPEG")[:1500],
        "zero.jpg": b"",
        "text.jpg": b"this is not an image, just text\n" * 10,
        "vector.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"></svg>',
        "tiny.png": encode(photo(8).resize((10, 10)), "PNG"),
        "bomb.png": encode(Image.new("L", (3000, 3000), 0), "PNG"),  # 9 Mpx, ~10 kB
        "strip.jpg": encode(photo(9).resize((2000, 100)), "JPEG"),
    }
    frames = [photo(10), photo(11)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["animated.gif"] = gif.getvalue()
    rotated = photo(12, 120).resize((240, 120))  # landscape pixels, EXIF says rotate 90
    exif = Image.Exif()
    exif[0x0112] = 6
    files["rotated.jpg"] = encode(rotated, "JPEG", exif=exif.tobytes())
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    return paths


def gzip_bomb(path, mib: int) -> None:
    """A .jsonl.gz of `mib` gzip members, each one JSON line padded with spaces to 1 MiB
    (about 1 kB on disk: deflate's best ratio)."""
    row = b'{"key": "k", "path": "/x.jpg", "tags": ["cat"]}'
    member = gzip.compress(row + b" " * ((1 << 20) - len(row) - 1) + b"\n", 9)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(member)


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the fetcher gave up on this row (a deadline, a byte cap): its choice

    def _send(
        self, code: int, body: bytes, ctype: str = "image/jpeg", length: int | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        if path.startswith("/img/"):
            name = path[5:]
            if name in self.files:
                return self._send(200, self.files[name])
            return self._send(404, b"not found", "text/plain")
        if path == "/500":
            return self._send(500, b"oops", "text/plain")
        if path == "/slow":
            time.sleep(3)
            return self._send(200, self.files["good.jpg"])
        if path == "/html":
            return self._send(200, b"<html><body>hello</body></html>", "text/html")
        if path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return None
        if path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
            return None
        if path == "/liar":  # says it is huge
            return self._send(200, self.files["good.jpg"], length=10**9)
        if path == "/stream":  # sends more than the cap without a length header
            self.send_response(200)
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b"\xff" * 65536)
            return None
        return self._send(404, b"not found", "text/plain")


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 with an ephemeral port, for one test module."""

    def __init__(self, files: dict[str, bytes]):
        _Handler.files = files
        _Handler.hits = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self.server.request_queue_size = 64  # default 5 drops SYNs under 16 fetch threads
        self.server.server_bind()
        self.server.server_activate()
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def hits(self) -> dict[str, int]:
        return _Handler.hits

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def output_digest(out: Path) -> dict[str, str]:
    """sha256 of every output file a reader uses (not the resume state, not the plot), for
    byte-identity checks between runs."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "_work" not in p.parts and p.name != "report.png"
    }
