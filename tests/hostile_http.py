"""A loopback HTTP server that misbehaves on purpose, written on raw sockets so it can do what
`http.server` will not: drip headers, stream forever, lie about lengths."""

from __future__ import annotations

import socket
import threading
import time

from ingest_fixtures import encode, photo

GOOD = encode(photo(0), "JPEG", quality=90)


def _drip(conn: socket.socket, data: bytes, every: float) -> None:
    for byte in data:
        conn.sendall(bytes([byte]))
        time.sleep(every)


def _respond(conn: socket.socket, path: str, files: dict[str, bytes]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
    if path.startswith("/slow-file/") and path[11:] in files:  # a slow but honest source
        time.sleep(0.2)
        body = files[path[11:]]
        conn.sendall(ok + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    elif path == "/good":
        conn.sendall(ok + b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD)
    elif path == "/drip-headers":  # slowloris: one header byte every 0.2 s, forever
        _drip(conn, b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 10_000, 0.2)
    elif path == "/drip-body":  # headers at once, then one body byte every 0.2 s
        conn.sendall(ok + b"Content-Length: 100000\r\n\r\n")
        _drip(conn, GOOD, 0.2)
    elif path == "/endless":  # no length, never ends
        conn.sendall(ok + b"\r\n")
        block = b"\xff" * 65536
        while True:
            conn.sendall(block)
    elif path == "/short":  # claims more than it sends, then closes
        conn.sendall(ok + b"Content-Length: %d\r\n\r\n" % (len(GOOD) * 2) + GOOD)
    elif path == "/long":  # sends more than it claims: the reader stops at the claim
        conn.sendall(ok + b"Content-Length: 700\r\n\r\n" + GOOD)
    elif path == "/html":
        body = b"<html><body><img src=x></body></html>"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
    elif path.startswith("/hop"):  # a redirect chain that never ends: /hop1 -> /hop2 -> ...
        n = int(path[4:] or 0) + 1
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /hop%d\r\nContent-Length: 0\r\n\r\n" % n)
    elif path == "/to-file":
        conn.sendall(b"HTTP/1.1 301 Moved\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    elif path == "/to-ftp":
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    elif path == "/garbage":  # not HTTP at all
        conn.sendall(b"\x00\x01\x02 hello this is not http\r\n\r\n")
    elif path == "/silent":  # accepts, reads the request, says nothing
        time.sleep(60)
    else:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


class HostileServer:
    """Serves each connection on its own daemon thread; `close` stops accepting."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files or {}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                block = conn.recv(4096)
                if not block:
                    return
                request += block
            path = request.split(b" ", 2)[1].decode()
            _respond(conn, path, self.files)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
