"""Reading eval sets: image folders, tar shards and parquet tables, as ``(item id, bytes)``.

A source that cannot be opened at all is the user's error (raised, one line); an item inside a
readable source that cannot be read is yielded as ``(item id, None, reason)`` so index building
records it and goes on.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from weakly_base import tar_reader

EvalItem = tuple[str, bytes | None, str | None]

# Every extension Pillow can open, plus a few it registers only lazily.
IMAGE_EXTENSIONS = frozenset(
    {ext.lower() for ext in Image.registered_extensions()}
    | {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
# One image in an eval tar; larger members are failed items, never read.
MAX_TAR_MEMBER_BYTES = 64 << 20
_BYTES_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "bytes", "img", "content")
_PATH_COLUMNS = ("path", "image_path", "file", "filename")
_ID_COLUMNS = ("key", "id", "__key__", "image_id", "name")


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def iter_folder(root: Path) -> Iterator[EvalItem]:
    """Image files under ``root`` (recursive, sorted); ids are POSIX paths relative to it."""
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p.name)):
        item_id = path.relative_to(root).as_posix()
        try:
            yield item_id, path.read_bytes(), None
        except OSError as exc:
            yield item_id, None, f"unreadable file: {exc.strerror or exc}"


def iter_tar(path: Path, max_member_bytes: int = MAX_TAR_MEMBER_BYTES) -> Iterator[EvalItem]:
    """Image members of a tar (plain, gzip, bzip2 or xz); ids are member names.

    Read through `weakly_base.tar_reader`, never `tarfile`: an eval tar is downloaded input, and
    tarfile's pax parsing is quadratic in a hostile header's length. A member that cannot be
    read (over the cap, sparse, an oversized extended header) is one failed item; a broken
    archive is one failed item after the members before the break."""
    with open(path, "rb") as handle:
        members = tar_reader.iter_members(
            tar_reader.open_archive(handle), is_image_name, max_member_bytes
        )
        while True:
            try:
                member = next(members)
            except StopIteration:
                return
            except (ValueError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                yield f"{path.name}:<after last member>", None, f"corrupt tar: {exc}"
                return
            if member.kind not in (tar_reader.FILE, tar_reader.SPARSE):
                continue
            if not is_image_name(member.name):
                continue
            if member.data is None:
                yield member.name, None, f"unreadable tar member: {member.skipped}"
            else:
                yield member.name, member.data, None


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[w] for w in wanted if w in lower), None)


def iter_parquet(path: Path) -> Iterator[EvalItem]:
    """Rows of a parquet with image bytes (or a HF-style struct with ``bytes``) or image paths.

    Bytes columns tried: image, jpg, jpeg, png, webp, bytes, img, content; path columns: path,
    image_path, file, filename (relative paths resolve against the parquet's folder). The id is
    the first of key, id, __key__, image_id, name, else the row number.
    """
    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from None
    names = pfile.schema_arrow.names
    bytes_col = _pick(names, _BYTES_COLUMNS)
    path_col = None if bytes_col else _pick(names, _PATH_COLUMNS)
    if bytes_col is None and path_col is None:
        raise ValueError(
            f"{path}: no image column; expected one of {', '.join(_BYTES_COLUMNS + _PATH_COLUMNS)}"
        )
    id_col = _pick(names, _ID_COLUMNS)
    columns = [c for c in (bytes_col or path_col, id_col) if c]
    row = 0
    for batch in pfile.iter_batches(columns=columns, batch_size=256):
        values = batch.column(columns[0]).to_pylist()
        ids = batch.column(id_col).to_pylist() if id_col else [None] * len(values)
        for value, item_id in zip(values, ids, strict=True):
            item_id = str(item_id) if item_id is not None else str(row)
            row += 1
            if isinstance(value, dict):  # e.g. {"bytes": ..., "path": ...}
                value = value.get("bytes") or value.get("path")
            if value is None:
                yield item_id, None, "null image value"
            elif isinstance(value, bytes):
                yield item_id, value, None
            else:
                file = Path(value)
                file = file if file.is_absolute() else path.parent / file
                try:
                    yield item_id, file.read_bytes(), None
                except OSError as exc:
                    yield item_id, None, f"unreadable file {file}: {exc.strerror or exc}"


def iter_eval_source(path: str | Path) -> Iterator[EvalItem]:
    """Dispatch on what ``path`` is: a folder, a ``.parquet`` file, or a tar file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"eval source not found: {path}")
    if path.is_dir():
        return iter_folder(path)
    if path.suffix.lower() == ".parquet":
        return iter_parquet(path)
    with open(path, "rb") as handle:
        is_tar = tar_reader.looks_like_tar(handle)
    if is_tar:
        return iter_tar(path)
    raise ValueError(f"{path}: eval source must be a folder, a tar file or a .parquet file")
