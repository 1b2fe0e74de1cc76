"""Reading tar archives whose every cost is bounded by the bytes the reader chooses to read.

Shards and eval tars are untrusted input, and CPython's `tarfile` (3.11) is not safe with them:
it searches a pax extended header with a regular expression that backtracks quadratically over
a run of digits (a 40 kB header takes seconds, 1 MB tens of minutes, CVE-2024-6232), reads a
GNU longname of any size into memory (a 300 MB name costs 1.3 GB), and fills the holes of a
sparse member with zeros on read (a few bytes may claim gigabytes). So every tar reader in
weakly goes through `iter_members`, which parses the 512-byte headers itself:

* extended headers (pax `x`/`X`, GNU longname `L`/longlink `K`) are read only up to
  `max_extended_bytes` in all per member; past it the member is skipped, never parsed. pax
  records are parsed in one linear pass. Global pax headers (`g`) are skipped unread: they
  would rename or resize every later member, which no archive this code reads needs;
* member data is read only for regular files the caller wants and only up to
  `max_member_bytes`; anything else is skipped by seeking (or reading in 1 MiB pieces where the
  stream cannot seek), so a member claiming 10 GB costs a seek, and then a short read that ends
  the archive as truncated;
* sparse members (GNU `S`, pax `GNU.sparse.*`) are never expanded: they are skipped with a
  reason;
* a broken archive (bad checksum, a number field that is not a number, a header or data cut
  short) ends iteration with `TarError`, a one-line ValueError naming the byte offset, after
  every member before it was yielded.

Where the format leaves room, offsets follow `tarfile` (data blocks follow regular files and
unknown types, not links, directories or devices), so both see the same members in a
well-formed archive. Names are decoded as `tarfile` decodes them (UTF-8, undecodable bytes
kept as surrogates) and are never used as paths here.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple
from zlib import adler32

BLOCK = 512
# Per member, all its extended headers together. weakly's writer emits none (USTAR only);
# real archives carry a path of up to 4 kB and a few attributes. Parsing here is linear, so
# the cap bounds memory and says "not an archive we read", not time.
MAX_EXTENDED_BYTES = 64 << 10
_SKIP_PIECE = 1 << 20

FILE, DIR, LINK, SYMLINK, DEVICE, FIFO, SPARSE, OTHER = (
    "file", "dir", "link", "symlink", "device", "fifo", "sparse", "other"
)  # fmt: skip
_KINDS = {
    b"0": FILE, b"\0": FILE, b"7": FILE, b"1": LINK, b"2": SYMLINK, b"3": DEVICE, b"4": DEVICE,
    b"5": DIR, b"6": FIFO, b"S": SPARSE,
}  # fmt: skip
_PAX_TYPES = (b"x", b"X")  # X: Solaris' name for the same thing
_GNU_LONG = (b"L", b"K")
_GLOBAL = b"g"
_EXTENDED = frozenset([*_PAX_TYPES, *_GNU_LONG, _GLOBAL])
# Kinds whose data blocks follow the header (tarfile: regular files and unknown types).
_HAS_DATA = (FILE, SPARSE, OTHER)


class TarError(ValueError):
    """The archive cannot be read past this point; the message is one line."""


class TarMember(NamedTuple):  # a tuple: one is built per member, and this is the hot path
    """One member of an archive (extended headers already applied).

    `data` holds its bytes when the caller wanted a regular file of at most the cap; otherwise
    None, and `skipped` says why when the member was wanted (else None)."""

    name: str
    kind: str
    size: int  # data bytes stored after the header (after pax `size`)
    data: bytes | None = None
    skipped: str | None = None


class _Source:
    """A byte stream read forward, with its position counted here (not every stream tells)."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self.f = fileobj
        self.pos = 0
        try:
            self.seekable = bool(fileobj.seekable())
            self.base = fileobj.tell() if self.seekable else 0
        except (AttributeError, OSError, ValueError):
            self.seekable, self.base = False, 0

    def read(self, n: int) -> bytes:
        """Up to n bytes; fewer only at the end of the stream."""
        piece = self.f.read(n) or b""
        if len(piece) == n:  # the usual case: one call, no join
            self.pos += n
            return piece
        parts, got = [piece], len(piece)
        if not piece:
            return b""
        while got < n:
            piece = self.f.read(n - got)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        self.pos += got
        return b"".join(parts)

    def skip(self, n: int) -> None:
        """Advance n bytes without keeping them. Past the end, a seekable stream just lands
        there and the next read comes back short."""
        if n <= 0:
            return
        if self.seekable:
            self.pos += n
            self.f.seek(self.base + self.pos)
            return
        while n > 0:
            got = len(self.read(min(n, _SKIP_PIECE)))
            if got == 0:
                self.pos += n  # report the offset the archive claimed
                return
            n -= got


_OCTAL = b"01234567"
_ZERO_BLOCK = bytes(BLOCK)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _number(field: bytes, what: str, offset: int) -> int:
    """An octal (or GNU base-256) number field, as `tarfile.nti` reads it; negative numbers and
    anything else are a broken header."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise TarError(f"negative {what} in the header at byte {offset}")
    text = field.split(b"\0", 1)[0].strip()
    if text.translate(None, _OCTAL):  # anything but octal digits (int() would take "+", "_")
        raise TarError(f"{what} field {bytes(field)!r} is not a number (header at byte {offset})")
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _byte_sum(block: bytes) -> int:
    """The sum of a 512-byte block's bytes, exactly, at C speed: zlib's Adler-32 keeps
    1 + the byte sum mod 65521 in its low half, and a 256-byte half sums to at most 65280, so
    per half that is the plain sum (a Python `sum` over the bytes costs ~10x more)."""
    view = memoryview(block)
    return (adler32(view[:256]) & 0xFFFF) + (adler32(view[256:]) & 0xFFFF) - 2


def _checksum_ok(block: bytes, stored: int) -> bool:
    """Whether `stored` is the block's unsigned sum, or its signed one (some old tars summed
    signed chars; tarfile accepts both), with the checksum field read as 8 spaces. The
    unsigned sum is all a well-formed header needs."""
    unsigned = 256 + _byte_sum(block) - sum(block[148:156])
    if stored == unsigned:
        return True
    return stored == 256 + sum(struct.unpack_from("148b8x356b", block))


class _Header(NamedTuple):  # a tuple: one is built per member, and this is the hot path
    name: str
    type: bytes
    size: int
    sparse_extended: bool


def _header(block: bytes, offset: int) -> _Header:
    try:
        stored = _number(block[148:156], "checksum", offset)
    except TarError:
        stored = -1
    if not _checksum_ok(block, stored):
        if offset == 0:
            raise TarError("not a tar archive (the first header's checksum is wrong)")
        raise TarError(f"header checksum wrong at byte {offset}")
    kind = block[156:157]
    name = _text(block[0:100])
    if kind == b"\0" and name.endswith("/"):
        kind = b"5"  # old tars mark a directory by the slash alone
    if block[345] and kind not in (*_GNU_LONG, b"S"):  # GNU keeps other fields there
        name = f"{_text(block[345:500])}/{name}"
    return _Header(name, kind, _number(block[124:136], "size", offset), block[482] != 0)


def pax_records(data: bytes) -> dict[bytes, bytes] | None:
    """`length keyword=value\\n` records in one linear pass; None when malformed (tarfile's
    regex search over the same bytes is what goes quadratic)."""
    out: dict[bytes, bytes] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0 and data.count(b"\0", pos) == n - pos:
            break  # padding some writers leave
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            return None
        end = pos + int(digits)
        if end <= space + 1 or end > n or data[end - 1] != 0x0A:
            return None
        keyword, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not keyword:
            return None
        out[keyword] = value
        pos = end
    return out


@dataclass
class _Pending:
    """What the extended headers before a member said about it."""

    total: int = 0
    name: str | None = None
    size: int | None = None
    sparse: bool = False
    problem: str | None = None


def _apply_pax(pending: _Pending, data: bytes) -> None:
    records = pax_records(data)
    if records is None:
        pending.problem = "malformed pax extended header"
        return
    path = records.get(b"path", records.get(b"GNU.sparse.name"))
    if path is not None and pending.name is None:
        pending.name = path.decode("utf-8", "surrogateescape").rstrip("/")
    size = records.get(b"size")
    if size is not None:
        if size.isdigit():
            pending.size = int(size)
        else:
            pending.problem = f"pax size {size[:40]!r} is not a number"
    if any(k.startswith(b"GNU.sparse.") for k in records):
        pending.sparse = True


def _skip_sparse_extensions(src: _Source, more: bool) -> None:
    """Old GNU sparse members continue their map in extra header blocks (flag at byte 504)."""
    while more:
        block = src.read(BLOCK)
        if len(block) < BLOCK:
            raise TarError(f"archive ends inside a sparse map at byte {src.pos}")
        more = block[504] != 0


def iter_members(
    fileobj: BinaryIO,
    want: Callable[[str], bool] = lambda name: True,
    max_member_bytes: int = 32 << 20,
    max_extended_bytes: int = MAX_EXTENDED_BYTES,
) -> Iterator[TarMember]:
    """Every member of a tar stream in stored order (see the module docstring).

    `want(name)` says whether a regular file's bytes should be read; others are skipped
    unread. Ends at the end-of-archive block; raises `TarError` where the archive is broken or
    cut short, after yielding every member before that point.
    """
    src = _Source(fileobj)
    pending = _Pending()
    used = False  # whether an extended header wrote into `pending` (most members have none)
    while True:
        offset = src.pos
        block = src.read(BLOCK)
        if len(block) < BLOCK:
            if offset == 0:
                raise TarError(f"not a tar archive ({len(block)} bytes, less than one header)")
            raise TarError(
                f"truncated: a header or the end-of-archive block was due at byte {offset}, "
                "past the end of the archive"
            )
        if block == _ZERO_BLOCK:  # end of archive (a compare, where strip() would copy)
            return
        head = _header(block, offset)
        if head.type in _EXTENDED:
            _extended(src, head, pending, max_extended_bytes)
            used = True
            continue
        yield _member(src, head, pending, want, max_member_bytes)
        if used:
            pending, used = _Pending(), False


def _extended(src: _Source, head: _Header, pending: _Pending, cap: int) -> None:
    """Read (or, over the cap, skip) one extended header into `pending`."""
    if head.type == _GLOBAL:
        src.skip(_padded(head.size))
        return
    pending.total += head.size
    if pending.total > cap:
        pending.problem = f"extended headers of {pending.total} bytes or more (cap {cap})"
        src.skip(_padded(head.size))
        return
    data = src.read(head.size)
    if len(data) < head.size:
        raise TarError(f"truncated: the archive ends inside an extended header at byte {src.pos}")
    src.skip(_padded(head.size) - head.size)
    if head.type in _PAX_TYPES:
        _apply_pax(pending, data)
    elif head.type == b"L" and pending.name is None:
        pending.name = _text(data)


def _member(
    src: _Source, head: _Header, pending: _Pending, want: Callable[[str], bool], cap: int
) -> TarMember:
    """The member whose (last) header was just read, its data read or skipped."""
    name = pending.name if pending.name is not None else head.name
    kind = _KINDS.get(head.type, OTHER)
    size = pending.size if pending.size is not None else head.size
    if kind == SPARSE:
        _skip_sparse_extensions(src, head.sparse_extended)
    elif kind == FILE and pending.sparse:
        kind = SPARSE
    stored = size if kind in _HAS_DATA else 0
    wanted = kind in (FILE, SPARSE) and want(name)
    skipped = None
    if wanted:
        if pending.problem:
            skipped = pending.problem
        elif kind == SPARSE:
            skipped = "sparse member (never expanded)"
        elif size > cap:
            skipped = f"member of {size} bytes (cap {cap})"
    if not wanted or skipped:
        src.skip(_padded(stored))
        return TarMember(name, kind, size, None, skipped)
    data = src.read(size)
    if len(data) < size:
        raise TarError(
            f"truncated: the archive ends at byte {src.pos} inside {name!r} "
            f"({size} bytes from byte {src.pos - len(data)})"
        )
    src.skip(_padded(size) - size)
    return TarMember(name, kind, size, data, None)


# -- compressed archives (eval sets) -----------------------------------------------------------

_MAGIC = ((b"\x1f\x8b", gzip.GzipFile), (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


def open_archive(fileobj: BinaryIO) -> BinaryIO:
    """The tar stream inside `fileobj`, decompressed when it starts with a gzip, bzip2 or xz
    signature (what `tarfile.open` tries), else `fileobj` itself. Decompression is streamed."""
    head = fileobj.read(6)
    fileobj.seek(-len(head), io.SEEK_CUR)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(fileobj)
    return fileobj


def looks_like_tar(fileobj: BinaryIO) -> bool:
    """Whether the stream (decompressed if need be) starts with a tar header whose checksum
    holds: `tarfile.is_tarfile` without parsing the first member's extended headers."""
    try:
        block = open_archive(fileobj).read(BLOCK)
    except (OSError, EOFError, lzma.LZMAError):
        return False
    if len(block) < BLOCK or not block.strip(b"\0"):
        return False
    try:
        _header(block, 0)
    except TarError:
        return False
    return True
