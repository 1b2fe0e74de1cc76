"""The CPU training transform (train/transforms.py): crop-first decode, drafted JPEG decode,
antialiased resize. Checked against Pillow's own full decode + resize of the same box, against
torchvision's RandomResizedCrop law, and on zone plates for aliasing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from bench_tools import load_benchmark
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.stats import ks_2samp

import train.transforms as T
from train.sample_rng import SampleRng
from weakly.fixtures import make_jpeg

torch.set_num_threads(1)


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}), **kw)
    return buf.getvalue()


def _photo(side_w: int, side_h: int, seed: int = 0) -> Image.Image:
    """A real photo crop upscaled to the asked size (smooth, like a large web image)."""
    small = Image.open(io.BytesIO(make_jpeg(np.random.default_rng(seed), 300, 360)))
    return small.convert("RGB").resize((side_w, side_h), Image.BICUBIC)


def _reference(data: bytes, box, size: int) -> np.ndarray:
    """Pillow alone: full decode, then an antialiased bilinear resize of exactly `box`."""
    x, y, w, h = box
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    return np.asarray(rgb.resize((size, size), Image.BILINEAR, box=(x, y, x + w, y + h)))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def aliasing_bench():
    return load_benchmark("aliasing")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_output_shape_dtype_and_range(fmt):
    data = _encode(_photo(320, 260), fmt)
    for size in (32, 224):
        out = T.decode_crop_cpu(data, np.random.default_rng(3), size)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
        assert out.flags.c_contiguous and 0 <= out.min() < out.max() <= 255


@pytest.mark.parametrize("generator", ["numpy", "per-sample"])
def test_crop_boxes_follow_the_random_resized_crop_law(generator):
    """Area fraction, log aspect and position against torchvision's RandomResizedCrop draws
    (two-sample Kolmogorov-Smirnov, fixed seeds), on a landscape and a portrait image."""
    from torchvision.transforms import RandomResizedCrop

    n = 4000
    for width, height in ((400, 300), (260, 341)):
        if generator == "numpy":
            rng = np.random.default_rng(0)
            ours = np.array([T.crop_params(width, height, rng)[:4] for _ in range(n)], float)
        else:  # the loader's: a fresh counter-based generator per sample, keyed by its place
            draws = (
                T.crop_params(width, height, SampleRng.of(0, 4, 0, 0, t, 1, 2)) for t in range(n)
            )
            ours = np.array([d[:4] for d in draws], float)
        torch.manual_seed(0)
        img = torch.empty(3, height, width)
        theirs = np.array(
            [
                (x, y, w, h)
                for y, x, h, w in (
                    RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)
                )
            ],
            float,
        )
        a, b = ours, theirs
        area = (a[:, 2] * a[:, 3], b[:, 2] * b[:, 3])
        aspect = (np.log(a[:, 2] / a[:, 3]), np.log(b[:, 2] / b[:, 3]))
        xpos = (a[:, 0] / np.maximum(1, width - a[:, 2]), b[:, 0] / np.maximum(1, width - b[:, 2]))
        ypos = (
            a[:, 1] / np.maximum(1, height - a[:, 3]),
            b[:, 1] / np.maximum(1, height - b[:, 3]),
        )
        for name, (p, q) in (("area", area), ("aspect", aspect), ("x", xpos), ("y", ypos)):
            assert ks_2samp(p, q).pvalue > 1e-3, (width, height, name)
    # The test can fail: a linear (not logarithmic) aspect law is told apart.
    rng = np.random.default_rng(1)
    linear = np.log(rng.uniform(3 / 4, 4 / 3, n))
    assert ks_2samp(linear, aspect[1]).pvalue < 1e-3


def test_flip_mirrors_and_seed_decides():
    data = _encode(_photo(300, 280))
    box = (20, 30, 200, 180)
    plain = T.decode_box(data, box, 64)
    assert np.array_equal(T.decode_box(data, box, 64, flip=True), plain[:, ::-1])
    a = T.decode_crop_cpu(data, np.random.default_rng(5), 64)
    b = T.decode_crop_cpu(data, np.random.default_rng(5), 64)
    c = T.decode_crop_cpu(data, np.random.default_rng(6), 64)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_full_scale_path_is_pillows_resize_of_the_same_box(fmt):
    """No draft (crop too small to draft, or PNG): the same pixels as Pillow's own antialiased
    bilinear resize of that box, up- and downscaling."""
    data = _encode(_photo(341, 256), fmt)
    for box in ((0, 0, 341, 256), (10, 20, 150, 120), (100, 50, 60, 90)):
        assert T.draft_scale(box[2], box[3], 96) == 1
        ours = T.decode_box(data, box, 96)
        assert _psnr(ours, _reference(data, box, 96)) > 45, box


def test_drafted_decode_is_close_to_full_decode_of_the_same_box():
    data = _encode(_photo(1600, 1200))
    for box, scale in (((100, 80, 1000, 900), 2), ((0, 0, 1600, 1200), 4)):
        assert T.draft_scale(box[2], box[3], 128) == scale
        drafted = T.decode_box(data, box, 128)
        full = T.decode_box(data, box, 128, draft=False)
        assert _psnr(drafted, _reference(data, box, 128)) > 40, box
        assert _psnr(full, _reference(data, box, 128)) > 45, box
    # A box shifted by 8 source pixels is told apart: the geometry is what the bound holds.
    shifted = _reference(data, (108, 88, 1000, 900), 128)
    assert _psnr(T.decode_box(data, (100, 80, 1000, 900), 128), shifted) < 35


def test_non_jpeg_modes_decode_to_rgb():
    base = _photo(200, 150)
    for img, fmt in ((base.convert("L"), "PNG"), (base.convert("RGBA"), "PNG"),
                     (base.convert("L"), "JPEG"), (base.convert("CMYK"), "JPEG"),
                     (base, "WEBP")):  # fmt: skip
        out = T.decode_crop_cpu(_encode(img, fmt), np.random.default_rng(0), 48)
        assert out.shape == (48, 48, 3) and out.dtype == np.uint8, (img.mode, fmt)


def test_undecodable_bytes_raise_decode_errors():
    good = _encode(_photo(200, 150))
    for bad in (good[: len(good) // 2], b"\xff\xd8\xff\xe0" + bytes(300), b"not an image"):
        with pytest.raises(T.DECODE_ERRORS) as err:
            T.decode_crop_cpu(bad, np.random.default_rng(0), 32)
        assert "\n" not in str(err.value) and ".cpp" not in str(err.value)


def test_eval_view_is_the_centre_square():
    data = _encode(_photo(300, 200))
    out = T.decode_center(data, 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert _psnr(out, _reference(data, (50, 0, 200, 200), 96)) > 45


@pytest.mark.parametrize("side", [700, 1400, 2048])
def test_zone_plates_do_not_alias_through_the_train_transform(side, aliasing_bench, monkeypatch):
    """The whole plate as the crop, stored as JPEG (drafted decode applies) and PNG, to 224 px:
    rings beyond the output's resolution fade to grey (aliasing <= 10 of 127.5), for the crop
    and for the eval view (JPEG DCT scale 1/1, 1/2, 1/4 at 700, 1400, 2048 px). Drafting straight to the output size (margin 1) aliases more."""
    plate = aliasing_bench.zone_plate(side)
    for fmt in ("JPEG", "PNG") if side < 2000 else ("JPEG",):  # a 2048 px PNG costs seconds
        data = aliasing_bench.encoded(plate, fmt)
        crop = Image.fromarray(T.decode_box(data, (0, 0, side, side), 224))
        view = Image.fromarray(T.decode_center(data, 224))
        assert aliasing_bench.aliasing(crop, side) <= 6, fmt
        assert aliasing_bench.aliasing(view, side) <= 6, fmt
    data = aliasing_bench.encoded(plate, "JPEG")
    monkeypatch.setattr(T, "DRAFT_MARGIN", 1.0)
    crop = Image.fromarray(T.decode_box(data, (0, 0, side, side), 224))
    assert aliasing_bench.aliasing(crop, side) > 2 * aliasing_bench.aliasing(
        plate.resize((224, 224), Image.BILINEAR), side
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10**6),
    seed=st.integers(0, 2**32 - 1),
)
def test_damaged_bytes_decode_or_raise_a_decode_error(edits, cut, seed):
    """Whatever the bytes, the transform returns a size x size RGB image or raises one of
    DECODE_ERRORS (what the loader counts as undecodable), nothing else."""
    data = bytearray(_SMALL_JPEG)
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[: max(2, cut % (len(data) + 1))])
    try:
        out = T.decode_crop_cpu(data, np.random.default_rng(seed), 24)
    except T.DECODE_ERRORS:
        return
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


_SMALL_JPEG = make_jpeg(np.random.default_rng(9), 40, 64)


def _jpeg_variants() -> dict[str, bytes]:
    photo = _photo(333, 250, seed=4)
    exif = Image.Exif()
    exif[0x010F] = "camera"  # Make
    return {
        "baseline": _encode(photo),
        "progressive": _encode(photo, progressive=True),
        "optimized, restart markers": _encode(photo, optimize=True, restart_marker_blocks=4),
        "grayscale": _encode(photo.convert("L")),
        "cmyk": _encode(photo.convert("CMYK")),
        "exif and icc": _encode(photo, exif=exif, icc_profile=b"\0" * 3000),
        "4:4:4": _encode(photo, subsampling=0),
    }


@pytest.mark.parametrize("name", list(_jpeg_variants()))
def test_jpeg_size_from_the_frame_header_is_pillows(name):
    data = _jpeg_variants()[name]
    assert T.jpeg_size(data) == Image.open(io.BytesIO(data)).size == T.header_size(data)


def test_jpeg_size_says_none_for_anything_it_cannot_read():
    data = _encode(_photo(120, 90))
    sof = data.index(b"\xff\xc0")
    for bad in (b"", b"\xff\xd8", data[: sof + 5], _encode(_photo(40, 30), "PNG"), b"GIF89a"):
        assert T.jpeg_size(bad) is None
    zero_width = data[: sof + 7] + b"\0\0" + data[sof + 9 :]
    assert T.jpeg_size(zero_width) is None
    # Scan data before any frame header is not a JPEG this reads.
    assert T.jpeg_size(b"\xff\xd8\xff\xda\x00\x08" + data[sof:]) is None


def test_writing_into_a_batch_slot_gives_the_returned_image():
    data = _encode(_photo(300, 280))
    batch = np.zeros((4, 48, 48, 3), np.uint8)
    flips = set()
    for i in range(4):  # keys chosen so that both mirror states occur
        rng = SampleRng.of(9, i)
        flips.add(T.crop_params(300, 280, SampleRng.of(9, i))[4])
        got = T.decode_crop_cpu(data, rng, 48, out=batch[i])
        assert np.shares_memory(got, batch)
        assert np.array_equal(batch[i], T.decode_crop_cpu(data, SampleRng.of(9, i), 48))
    assert flips == {0, 1}


def test_the_header_path_crops_what_pillow_would_crop():
    """A JPEG's size from its frame header (no Pillow) gives the crop and eval view that the
    Pillow-opened path gives for the same box."""
    for name, data in _jpeg_variants().items():
        w, h = Image.open(io.BytesIO(data)).size
        box = T.center_box(w, h)
        assert np.array_equal(T.decode_center(data, 40), T.decode_box(data, box, 40)), name
