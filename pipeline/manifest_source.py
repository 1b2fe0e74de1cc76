"""The bytes of one manifest file, read in bounded time and memory, or a `ManifestError` why not.

A manifest comes from outside. It may name a FIFO (opening it blocks until someone writes, so
a pass-1 task hung for ever), a device (`/dev/zero` never ends), a directory, or be a 1 MB
`.gz` that inflates to gigabytes (`gzip.decompress` took 20 GB of RSS and ten minutes for one
such file). So:
- only regular files are read (locally: pipeline/regular_files.py, no call that can block;
  elsewhere: what the filesystem reports as a file);
- at most `MAX_MANIFEST_BYTES` are read, after decompression, which is streamed and stopped at
  the cap: a larger file is refused whole, as `bad_manifest`, naming the cap;
- at most `MAX_MANIFEST_ROWS` lines (text) or rows (parquet). A pass-1 task holds all rows of
  its file, at 250-750 bytes of memory each however short the line (`{}` is three bytes), so
  the byte cap alone does not bound memory.
Both caps are per file: split larger manifests into several files (a folder of them is one
job, read in parallel).
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import BinaryIO

import fsspec

from .regular_files import NotRegularFile, local_path, open_regular

MAX_MANIFEST_BYTES = 256 << 20  # content of one manifest file, decompressed / decoded
MAX_MANIFEST_ROWS = 2_000_000  # lines of a text manifest, rows of a parquet one


class ManifestError(ValueError):
    """A manifest file that cannot be read at all; the message names file and line."""


def _split_hint(limit: int, unit: str) -> str:
    return f"split it into files of at most {limit:,} {unit} (a folder of them is one job)"


def _open(url: str, storage_options: dict | None) -> tuple[BinaryIO, int | None]:
    """(the file opened for reading, its size if known). Only regular files are opened."""
    local = local_path(url)
    if local is not None:
        try:
            handle = open_regular(local)
        except FileNotFoundError:
            raise ManifestError(f"{url}: no such file") from None
        except NotRegularFile as exc:
            raise ManifestError(f"{url}: a {exc.kind}, not a regular file") from None
        except OSError as exc:
            raise ManifestError(f"{url}: cannot be opened ({exc.strerror or exc})") from None
        return handle, os.fstat(handle.fileno()).st_size
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise ManifestError(f"{url}: no such file") from None
    if info.get("type") != "file":
        raise ManifestError(f"{url}: a {info.get('type')}, not a file")
    return fs.open(path, "rb"), info.get("size")


def read_manifest_bytes(
    url: str, storage_options: dict | None = None, max_bytes: int = MAX_MANIFEST_BYTES
) -> bytes:
    """The content of manifest `url`, decompressed when it ends in `.gz`.

    Reads at most `max_bytes + 1` bytes of content (so a gzip bomb costs about the cap, not
    its expansion) and refuses a larger file; a plain local file over the cap is refused from
    its size, unread."""
    gz = url.lower().endswith(".gz")
    handle, size = _open(url, storage_options)
    hint = _split_hint(max_bytes, "bytes")
    with handle:
        if not gz and size is not None and size > max_bytes:
            raise ManifestError(f"{url}: {size:,} bytes, over the manifest cap; {hint}")
        source = gzip.GzipFile(fileobj=handle, mode="rb") if gz else handle
        try:
            data = source.read(max_bytes + 1)
        except (OSError, EOFError, zlib.error) as exc:
            what = "not a valid gzip file" if gz else "could not be read"
            raise ManifestError(f"{url}: {what} ({exc})") from None
    if len(data) > max_bytes:
        inflated = " once decompressed" if gz else ""
        raise ManifestError(f"{url}: over {max_bytes:,} bytes{inflated}, the manifest cap; {hint}")
    return data


def check_line_count(
    url: str, data: bytes, max_rows: int = MAX_MANIFEST_ROWS, header: bool = False
) -> None:
    """Refuse a text manifest of more than `max_rows` lines (+ its header line) before parsing
    it. Lines end at \\n, \\r\\n or \\r, as the CSV reader sees them; counted in C, no copy."""
    lines = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    lines += bool(data) and not data.endswith((b"\n", b"\r"))  # a last line without an end
    if lines > max_rows + header:
        hint = _split_hint(max_rows, "lines")
        raise ManifestError(f"{url}: {lines:,} lines, over the manifest cap; {hint}")
