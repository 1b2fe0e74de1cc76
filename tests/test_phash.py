"""weakly-phash-v1: golden values, decode paths, DCT batching and every bad-input case."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import skimage.data
from one_row_reference import dct_block
from PIL import Image

from pipeline.phash import (
    HASH_VERSION,
    MIN_SIDE,
    ImageDecodeError,
    dct_blocks,
    decode_for_hash,
    hamming,
    hashes_from_blocks,
    luma32,
    phash,
    phash_array,
    phash_many,
    to_hex,
)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


# PNG decoding is bit-exact everywhere, so these pin the definition, not a libjpeg version.
GOLDEN = {
    "astronaut": "c2924c5532bddfc8",
    "camera": "bff1c1c0434e8cbc",
    "coffee": "bb8320376c0f3637",
    "rocket": "c0371bec1be51267",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_hashes_pin_the_definition(name):
    assert HASH_VERSION == "weakly-phash-v1"
    data = encode(Image.fromarray(getattr(skimage.data, name)()))
    assert to_hex(phash(data)) == GOLDEN[name]


def test_hash_is_unsigned_64_bit_with_32_ones(astronaut):
    h = phash(encode(astronaut, "JPEG", quality=90))
    assert 0 <= h < 2**64
    assert bin(h).count("1") == 32  # median threshold over 64 distinct coefficients


def test_phash_bytes_equals_phash_array_of_same_decode(astronaut):
    for data in (encode(astronaut, "JPEG", quality=85), encode(astronaut)):
        assert phash(data) == phash_array(decode_for_hash(data))


def test_phash_array_accepts_numpy_and_full_decode_is_close(astronaut):
    data = encode(astronaut, "JPEG", quality=90)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert phash_array(full) == phash_array(Image.fromarray(full))
    assert hamming(phash_array(full), phash(data)) <= 4
    grey = np.asarray(Image.fromarray(full).convert("L"))
    assert hamming(phash_array(grey), phash(data)) <= 4


def test_hash_stable_across_resolutions(astronaut):
    small = encode(astronaut.resize((256, 256), Image.LANCZOS), "JPEG", quality=90)
    large = encode(astronaut.resize((1080, 1080), Image.LANCZOS), "JPEG", quality=90)
    assert hamming(phash(small), phash(large)) <= 4


def test_batched_dct_matches_per_image_and_scipy(astronaut):
    from scipy.fft import dctn

    sq = np.stack([luma32(astronaut), luma32(astronaut.rotate(30))])
    blocks = dct_blocks(sq)
    for i in range(2):
        ref = dctn(sq[i].astype(np.float64), norm="ortho")[:8, :8]
        np.testing.assert_allclose(blocks[i], ref, atol=1e-9)
    np.testing.assert_allclose(dct_block(astronaut), blocks[0], atol=1e-9)
    assert hashes_from_blocks(blocks)[0] == phash_array(astronaut)


def test_phash_many_matches_phash_and_records_errors(astronaut):
    good = encode(astronaut, "JPEG", quality=90)
    result = phash_many([good, b"", b"not an image", good])
    assert result.hashes.dtype == np.uint64
    assert result.ok.tolist() == [True, False, False, True]
    assert result.hashes[0] == result.hashes[3] == phash(good)
    assert [i for i, _ in result.errors] == [1, 2]
    assert "empty" in result.errors[0][1]


def _bad(data: bytes, match: str, **kw):
    with pytest.raises(ImageDecodeError, match=match):
        phash(data, **kw)
    batch = phash_many([data], **kw)
    assert not batch.ok[0] and batch.errors[0][0] == 0


def test_zero_bytes():
    _bad(b"", "empty")


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not an image\n")
    _bad(path.read_bytes(), "not an image")


def test_truncated_jpeg(tmp_path, astronaut):
    path = tmp_path / "cut.jpg"
    path.write_bytes(encode(astronaut, "JPEG", quality=90)[:3000])
    _bad(path.read_bytes(), "truncated or corrupt")


def test_truncated_png(astronaut):
    data = encode(astronaut)
    _bad(data[: len(data) // 2], "truncated or corrupt")


def test_corrupt_jpeg_header(astronaut):
    data = bytearray(encode(astronaut, "JPEG", quality=90))
    data[2:40] = b"\xff" * 38  # destroys the markers after SOI
    with pytest.raises(ImageDecodeError):
        phash(bytes(data))


def test_pixel_cap_on_a_real_png(tmp_path, astronaut):
    path = tmp_path / "big.png"
    path.write_bytes(encode(astronaut))
    _bad(path.read_bytes(), "decompression bomb", max_pixels=100_000)


def test_crafted_ihdr_claiming_a_huge_image():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 1e10 pixels claimed
    idat = zlib.compress(b"\x00" * 64)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    _bad(data, "decompression bomb")


@pytest.mark.parametrize("size", [(1, 1), (MIN_SIDE - 1, 200)])
def test_too_small(size):
    _bad(encode(Image.new("RGB", size, "red")), "too small")


def test_unsupported_format():
    _bad(b"%PDF-1.4\n" + b"0" * 100, "not an image")


def test_animated_gif_hashes_first_frame(astronaut):
    a = astronaut.convert("L").resize((64, 64))
    b = a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    a.save(buf, "GIF", save_all=True, append_images=[b], duration=100, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    assert phash(buf.getvalue()) == phash(encode(a, "GIF"))


def test_cmyk_jpeg(astronaut):
    cmyk = encode(astronaut.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    assert hamming(phash(cmyk), phash(encode(astronaut))) <= 6


def test_16_bit_png(astronaut):
    grey16 = (np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    data = encode(Image.fromarray(grey16))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert phash(data) == phash(encode(astronaut.convert("L")))


def test_palette_with_alpha_is_composited_over_white(astronaut):
    rgba = astronaut.convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, :256] = 0  # left half fully transparent: should look white
    rgba.putalpha(Image.fromarray(alpha))
    pal = encode(rgba.convert("P", palette=Image.Palette.ADAPTIVE).convert("RGBA"))
    pa = rgba.quantize(colors=255)
    pa.info["transparency"] = 0
    data = encode(pa)
    assert Image.open(io.BytesIO(data)).mode == "P"
    whited = np.asarray(astronaut.convert("RGB")).copy()
    whited[:, :256] = 255
    assert hamming(phash(data), phash(encode(Image.fromarray(whited)))) <= 12
    assert hamming(phash(pal), phash(encode(Image.fromarray(whited)))) <= 6


def test_exif_orientation_is_applied(astronaut):
    stored = astronaut.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # display needs a 270-degree (clockwise 90) turn
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    upright = phash(encode(astronaut, "JPEG", quality=95))
    assert hamming(phash(data), upright) <= 4
    assert hamming(phash(encode(stored, "JPEG", quality=95)), upright) > 16


def test_array_input_validation():
    with pytest.raises(ImageDecodeError):
        phash_array(np.zeros((32, 32), dtype=np.float32))
    with pytest.raises(ImageDecodeError):
        phash_array(np.zeros((4, 4), dtype=np.uint8))
