"""Hostile tar archives, crafted byte by byte (no tool writes them on purpose).

Headers are built here rather than with `tarfile.TarInfo.tobuf` so that fields can say what
`tarfile` would never write: a base-256 size of 10 GB, a sparse map claiming terabytes, a pax
record of a megabyte of digits. `Segments` serves an archive of any claimed size from a few
real bytes and runs of filler generated on read, so a 300 MB longname or a 10 GB member costs
the test nothing unless a reader really reads it.
"""

from __future__ import annotations

import io
import json
import tarfile

BLOCK = 512
END = b"\0" * (2 * BLOCK)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _base256(value: int, width: int) -> bytes:
    return b"\x80" + value.to_bytes(width - 1, "big")


def header(
    name: str | bytes,
    size: int,
    kind: bytes = b"0",
    *,
    base256: bool = False,
    sparse: tuple[int, int, int] | None = None,
) -> bytes:
    """One 512-byte header with a valid checksum. `base256` writes the size as GNU does for
    8 GB and more; `sparse` = (offset, numbytes, realsize) fills one old-GNU sparse entry."""
    raw = name.encode() if isinstance(name, str) else name
    block = bytearray(BLOCK)
    block[0 : len(raw[:100])] = raw[:100]
    block[100:108] = _octal(0o644, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _base256(size, 12) if base256 or size >= 8**11 else _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[156:157] = kind
    block[257:265] = b"ustar  \0" if kind == b"S" else b"ustar\x0000"
    if sparse is not None:
        offset, numbytes, realsize = sparse
        block[386:398] = _octal(offset, 12)
        block[398:410] = _octal(numbytes, 12)
        block[483:495] = _base256(realsize, 12)
    return with_checksum(bytes(block))


def with_checksum(block: bytes) -> bytes:
    """`block` with its checksum field recomputed: a header edited on purpose still passes."""
    out = bytearray(block)
    out[148:156] = b" " * 8
    out[148:156] = b"%06o\0 " % sum(out)
    return bytes(out)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def member(name: str, data: bytes, kind: bytes = b"0") -> bytes:
    return header(name, len(data), kind) + pad(data)


def sample(key: str, jpg: bytes, meta: dict | bytes) -> bytes:
    """A sample's two members; `meta` as raw bytes when it must be something json.dumps
    would not write (1e400, 200k brackets)."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return member(f"{key}.jpg", jpg) + member(f"{key}.json", raw)


def pax_record(keyword: str, value: bytes) -> bytes:
    body = b" " + keyword.encode() + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax_digits(n: int, then: bytes) -> bytes:
    """A pax extended header whose n bytes are all digits (CVE-2024-6232: tarfile's regex
    search over it is quadratic), then the member `then` it applies to."""
    return header("././@PaxHeader", n, b"x") + pad(b"7" * n) + then


def pax_sparse(name: str, data: bytes, realsize: int) -> bytes:
    """A pax (GNU 1.0) sparse member: its stored bytes are a map and data; realsize is what
    `tarfile` would expand it to."""
    records = (
        pax_record("GNU.sparse.major", b"1")
        + pax_record("GNU.sparse.minor", b"0")
        + pax_record("GNU.sparse.name", name.encode())
        + pax_record("GNU.sparse.realsize", str(realsize).encode())
    )
    stored = pad(b"1\n0\n%d\n" % len(data)) + data
    return header("././@PaxHeader", len(records), b"x") + pad(records) + member(name, stored)


def gnu_sparse(name: str, data: bytes, realsize: int) -> bytes:
    """An old-GNU sparse member (type S): `data` stored at offset 0, `realsize` claimed."""
    return header(name, len(data), b"S", sparse=(0, len(data), realsize)) + pad(data)


class Segments(io.RawIOBase):
    """A read-only, seekable file made of real byte strings and (filler byte, length) runs
    generated on read: an archive claiming gigabytes for the cost of its headers."""

    def __init__(self, parts: list[bytes | tuple[int, int]]) -> None:
        self.parts, self.starts, total = [], [], 0
        for part in parts:
            self.parts.append(part)
            self.starts.append(total)
            total += len(part) if isinstance(part, bytes) else part[1]
        self.size, self.pos = total, 0
        self.served = 0  # bytes handed out by read: what a reader really read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        out = bytearray()
        while n > 0 and self.pos < self.size:
            i = max(j for j, s in enumerate(self.starts) if s <= self.pos)
            part, within = self.parts[i], self.pos - self.starts[i]
            length = len(part) if isinstance(part, bytes) else part[1]
            take = min(n, length - within)
            out += (
                part[within : within + take] if isinstance(part, bytes) else bytes([part[0]]) * take
            )
            self.pos += take
            n -= take
        self.served += len(out)
        return bytes(out)


def gnu_longname(length: int, then: bytes) -> Segments:
    """A GNU longname header claiming `length` bytes of name (filler 'a'), then `then`."""
    return Segments(
        [header("././@LongLink", length, b"L"), (0x61, length), b"\0" * (-length % BLOCK), then]
    )


def big_member(name: str, claimed: int, real: bytes) -> Segments:
    """A regular member whose size field (base-256) claims `claimed` bytes while the archive
    holds only `real` after the header, and no end-of-archive block."""
    return Segments([header(name, claimed, base256=True), real])


def ustar(members: list[tuple[str, bytes]]) -> bytes:
    """A well-formed archive as `tarfile` writes one (the baseline next to the hostile ones)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
