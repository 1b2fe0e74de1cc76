"""Hostile image files: bombs, forged headers, huge metadata, polyglots, odd formats, and a
short fuzz run over the decode/hash path (benchmarks/fuzz_decode.py runs it longer)."""

from __future__ import annotations

import io
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from ingest_fixtures import encode, photo
from PIL import Image
from proc_tools import HeapPeak

from pipeline.fetch import FetchConfig, FetchError, fetch_one
from pipeline.images import ImageConfig, ImageReject, plain_jpeg, prepare_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fuzz_decode import fuzz  # noqa: E402

CONFIG = ImageConfig(image_size=64, max_pixels=4_000_000)


def _reason(data: bytes, config: ImageConfig = CONFIG) -> str:
    with pytest.raises(ImageReject) as caught:
        prepare_image(data, config)
    assert caught.value.detail
    return caught.value.reason


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _forge_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    i = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def test_pixel_bombs_are_rejected_before_any_pixel_is_decoded():
    small = encode(photo(0, 100), "JPEG")
    bombs = [
        _png_header_only(60_000, 60_000),  # 3.6 Gpx claimed by a ~100 byte file
        _forge_jpeg_size(small, 50_000, 50_000),
        _forge_jpeg_size(small, 3000, 2000),  # 6 Mpx: over this config's 4 Mpx cap
        encode(Image.new("1", (2500, 2500)), "PNG"),  # really 6 Mpx, a few kB compressed
    ]
    with HeapPeak() as heap:
        for bomb in bombs:
            assert len(bomb) < 20_000
            assert _reason(bomb) == "too_many_pixels"
    assert heap.peak < 20 << 20  # a decoded 6 Mpx RGB image alone would be 18 MB


def test_byte_caps_hold_for_inline_and_file_rows(tmp_path):
    config = FetchConfig(max_bytes=10_000)
    big = b"\xff\xd8" + b"\x00" * 20_000
    (tmp_path / "big.jpg").write_bytes(big)
    for ref in ((None, None, big), (None, str(tmp_path / "big.jpg"), None)):
        result = fetch_one(ref, config)
        assert isinstance(result, FetchError) and result.reason == "too_large"


def test_malformed_headers_are_rejected_with_a_reason():
    good_png = encode(photo(1, 80), "PNG")
    good_jpg = encode(photo(1, 80), "JPEG")
    cases = {
        "png bad IHDR crc": good_png[:29] + b"\x00\x00\x00\x00" + good_png[33:],
        "png zero size": _png_header_only(0, 0),
        "jpeg zero size": _forge_jpeg_size(good_jpg, 0, 0),
        "jpeg cut in header": good_jpg[:40],
        "jpeg marker soup": b"\xff\xd8" + b"\xff" * 500,
        "gif header only": b"GIF89a\x10\x00\x10\x00",
        "bmp huge offset": b"BM"
        + b"\x00" * 8
        + struct.pack("<I", 1 << 30)
        + b"\x28"
        + b"\x00" * 40,
    }
    for name, data in cases.items():
        assert _reason(data) in ("not_an_image", "corrupt_image", "too_small"), name


def test_formats_outside_the_allow_list_are_never_opened():
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
        b"newpath 0 0 moveto 100 100 lineto stroke showpage\n%%EOF\n"
    )
    Image.open(io.BytesIO(eps))  # Pillow itself would open it (and run Ghostscript to load it)
    assert _reason(eps) == "not_an_image"
    buf = io.BytesIO()
    photo(2, 80).save(buf, "PPM")
    assert _reason(buf.getvalue()) == "not_an_image"


def test_polyglot_payload_never_reaches_the_shards():
    jpeg = encode(photo(3, 60), "JPEG", quality=90)
    kept = prepare_image(jpeg, CONFIG)
    assert kept.kept_original and kept.jpeg == jpeg and plain_jpeg(jpeg)

    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("evil.sh", "#!/bin/sh\necho owned\n")
    html = b"<html><script>alert(1)</script></html>"
    commented = encode(photo(3, 60), "JPEG", quality=90, comment=html)
    assert html in commented
    for polyglot in (jpeg + payload.getvalue(), jpeg + html, commented):
        assert not plain_jpeg(polyglot)
        out = prepare_image(polyglot, CONFIG)
        assert not out.kept_original
        assert b"PK\x03\x04" not in out.jpeg and b"<script>" not in out.jpeg
        assert Image.open(io.BytesIO(out.jpeg)).size == (out.width, out.height)


def test_huge_metadata_is_bounded_and_dropped():
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 kB EXIF block, near the segment limit
    exif[0x0112] = 1
    jpeg = encode(photo(4, 60), "JPEG", exif=exif.tobytes())
    # plus 40 more 64 kB APP1/COM segments: 2.6 MB of metadata around a 60 px image
    i = jpeg.index(b"\xff\xdb")
    extra = b"".join(b"\xff\xe1" + struct.pack(">H", 65_000) + b"E" * 64_998 for _ in range(20))
    extra += b"".join(b"\xff\xfe" + struct.pack(">H", 65_000) + b"C" * 64_998 for _ in range(20))
    bloated = jpeg[:i] + extra + jpeg[i:]
    assert len(bloated) > 2_600_000
    within_cap = prepare_image(jpeg, CONFIG)  # one EXIF block under MAX_KEPT_METADATA: kept
    assert within_cap.kept_original and len(within_cap.jpeg) < 80_000
    out = prepare_image(bloated, CONFIG)
    assert not out.kept_original and len(out.jpeg) < 20_000
    assert b"x" * 1000 not in out.jpeg and b"E" * 1000 not in out.jpeg


def test_plain_jpeg_needs_every_segment_intact():
    jpeg = encode(photo(5, 60), "JPEG")
    assert plain_jpeg(jpeg)
    assert not plain_jpeg(jpeg[:-2])  # no EOI
    assert not plain_jpeg(jpeg + b"\x00")
    assert not plain_jpeg(b"\xff\xd8\xff\xe0\x00\x01")  # segment length below 2
    assert not plain_jpeg(encode(photo(5, 60), "PNG"))


def test_short_fuzz_run_finds_nothing_and_covers_both_outcomes():
    outcomes, _ = fuzz(120, seed=0)
    assert sum(outcomes.values()) >= 100
    assert outcomes["ok"] > 0 and sum(n for r, n in outcomes.items() if r != "ok") > 0
