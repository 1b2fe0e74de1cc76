"""Hostile tar headers cost one member, never minutes or gigabytes (weakly_base/tar_reader.py).

Each archive is crafted in the test (tests/hostile_tars.py). The same inputs through plain
`tarfile` took seconds to tens of minutes, or gigabytes: RELIABILITY.md has the figures, from
`benchmarks/hostile_tars.py`. Timeouts here only stop a regression from hanging the suite.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import hostile_tars as H
import numpy as np
import pytest
from proc_tools import HeapPeak

from pipeline.eval_sources import iter_eval_source
from weakly.cli import main as weakly_main
from weakly.fixtures import make_jpeg
from weakly_base import shard_format as fmt
from weakly_base import tar_reader
from weakly_base.tar_reader import TarError, iter_members

ROOT = Path(__file__).resolve().parents[1]
JPG = b"\xff\xd8 not decoded here \xff\xd9"
META = {"labels": [1], "weight": 0.5}
GOOD = H.sample("good", JPG, META)


def _records(data) -> list[tuple[str, str | None]]:
    stream = data if hasattr(data, "read") else io.BytesIO(data)
    return [(r.key, r.problem) for r in fmt.iter_shard_records(stream)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [20_000, 80_000, 1 << 20])
def test_a_pax_header_of_digits_costs_its_member(size):
    """tarfile: 1 s at 20 kB, ~20 s at 80 kB, tens of minutes at 1 MB (quadratic). Here a
    header under the cap is parsed in one pass and found malformed; over it, never parsed."""
    bomb = H.pax_digits(size, H.sample("bomb", JPG, META))
    got = _records(bomb + GOOD + H.END)
    assert [k for k, _ in got] == ["bomb", "good"]
    assert got[1][1] is None
    over = size > tar_reader.MAX_EXTENDED_BYTES
    assert ("cap" in got[0][1]) if over else (got[0][1] == "malformed pax extended header")


@pytest.mark.timeout(60)
def test_a_300_megabyte_gnu_longname_is_skipped_unread():
    """tarfile reads the whole name into memory (1.3 GB peak RSS); here it is seeked over."""
    archive = H.gnu_longname(300 << 20, H.sample("long", JPG, META) + GOOD + H.END)
    with HeapPeak() as heap:
        got = _records(archive)
    peak = heap.peak
    assert got[0][0] == "long" and "extended headers of 314572800 bytes" in got[0][1]
    assert got[1] == ("good", None)
    assert archive.served < 64 << 10  # bytes the reader asked for, of 300 MB
    assert peak < 1 << 20


def test_pax_names_and_sizes_within_the_cap_are_honoured():
    """A real pax header (a long path, an explicit size) is read as tarfile reads it."""
    name = "d/" * 60 + "x.jpg"
    records = H.pax_record("path", name.encode()) + H.pax_record("size", b"3")
    data = (
        H.header("././@PaxHeader", len(records), b"x")
        + H.pad(records)
        + H.header("short", 3)
        + H.pad(b"abc")
        + H.END
    )
    [member] = list(iter_members(io.BytesIO(data)))
    assert (member.name, member.size, member.data) == (name, 3, b"abc")


@pytest.mark.parametrize("kind", ["gnu", "pax"])
def test_sparse_members_are_never_expanded(kind):
    """A 10-byte sparse member claiming 10 TiB: tarfile hands out 10 TiB of zeros on read."""
    make = H.gnu_sparse if kind == "gnu" else H.pax_sparse
    data = make("sparse.jpg", b"x" * 10, 10 << 40) + H.member("sparse.json", b"{}") + GOOD + H.END
    with HeapPeak() as heap:
        got = _records(data)
    peak = heap.peak
    assert got == [("sparse", "sparse member (never expanded)"), ("good", None)]
    assert peak < 1 << 20


@pytest.mark.parametrize("seekable", [True, False])
def test_a_ten_gigabyte_size_claim_stops_the_archive_with_a_reason(seekable):
    """The member is over the cap, so it is skipped, never read; skipping runs off the end of
    the archive, which ends it as truncated after the samples before it."""
    archive = H.Segments([GOOD, H.header("huge.jpg", 10 << 30, base256=True), b"x" * 5000])
    stream = archive if seekable else io.BufferedReader(_Unseekable(archive))
    with HeapPeak() as heap, pytest.raises(TarError, match="truncated") as caught:
        list(iter_members(stream))
    peak = heap.peak
    assert "\n" not in str(caught.value)
    assert archive.served < 8 << 10 and peak < 4 << 20
    # Through the shard reader: the good sample comes first, then the break.
    archive.seek(0)
    records = fmt.iter_shard_records(archive)
    assert next(records).key == "good"
    with pytest.raises(TarError):
        next(records)


class _Unseekable(io.RawIOBase):
    """A pipe: read only."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _edited(block: bytes, at: int, field: bytes) -> bytes:
    return H.with_checksum(block[:at] + field + block[at + len(field) :])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a tar archive"),
        (b"GIF89a" + bytes(600), "not a tar archive"),
        (GOOD[:700], "truncated"),
        (GOOD + b"\x01" * 512, "checksum wrong at byte 2048"),
        (GOOD + _edited(H.header("n.jpg", 0), 124, b"\xff" * 12) + H.END, "negative size"),
        (GOOD + _edited(H.header("n.jpg", 0), 124, b"12345678901x") + H.END, "not a number"),
    ],
)
def test_a_broken_archive_ends_with_one_line(data, message):
    with pytest.raises(TarError, match=message) as caught:
        list(iter_members(io.BytesIO(data)))
    assert "\n" not in str(caught.value)


def test_eval_tars_go_through_the_capped_reader(tmp_path):
    """`weakly eval-index build` reads a tar holding a pax bomb, a sparse member and a good
    image: the two hostile members are failed items, the image is indexed."""
    image = make_jpeg(np.random.default_rng(0), 64, 80)
    data = (
        H.pax_digits(1 << 20, H.member("bomb.jpg", image))
        + H.gnu_sparse("sparse.jpg", image, 10 << 40)
        + H.member("ok.jpg", image)
        + H.END
    )
    tar = tmp_path / "eval.tar"
    tar.write_bytes(data)
    items = list(iter_eval_source(tar))
    assert [(i, d is not None) for i, d, _ in items] == [
        ("bomb.jpg", False),
        ("sparse.jpg", False),
        ("ok.jpg", True),
    ]
    assert (
        weakly_main(["eval-index", "build", "--eval", f"t={tar}", "--out", str(tmp_path / "e.idx")])
        == 0
    )


def _tarfile_reads(path: Path) -> list[str]:
    """Calls that let `tarfile` parse an archive: open/TarFile without a write mode,
    is_tarfile, extractfile."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        base = node.func.value
        name = f"{getattr(base, 'id', '?')}.{node.func.attr}"
        if name in ("tarfile.is_tarfile", "tarfile.TarFile") or node.func.attr == "extractfile":
            found.append(f"{path.name}:{node.lineno} {name}")
        if name == "tarfile.open":
            mode = next((k.value for k in node.keywords if k.arg == "mode"), None)
            if mode is None and len(node.args) > 1:
                mode = node.args[1]
            text = mode.value if isinstance(mode, ast.Constant) else None
            if not (isinstance(text, str) and text.startswith(("w", "x", "a"))):
                found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_no_product_code_reads_a_tar_with_tarfile():
    """Every tar reader goes through weakly_base/tar_reader.py (writers may use tarfile)."""
    found = []
    for package in ("pipeline", "train", "weakly", "weakly_base", "wordnet_tools", "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found += _tarfile_reads(path)
    assert found == []


def test_the_tarfile_scan_sees_a_reader(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import tarfile\ntarfile.open('x')\ntarfile.open('y', 'w')\ntarfile.is_tarfile('z')\n"
    )
    assert _tarfile_reads(probe) == ["probe.py:2 tarfile.open", "probe.py:4 tarfile.is_tarfile"]
