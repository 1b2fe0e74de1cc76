"""The OpenCV image path for plain JPEGs: decode, antialiased downscale, encode.

Why it exists: on one core it is ~1.7x Pillow's decode + antialiased bilinear + encode on
~500 px photos (~3x at ~1500 px), with the Pillow path's aliasing and sharpness
(benchmarks/image_path.py, BENCHMARKS.md). OpenCV's own downscales are not antialiased at the
ratios ingest meets (INTER_LINEAR samples without a prefilter; INTER_AREA is a box filter,
which aliases at non-integer ratios), so the low-pass is explicit: a Gaussian whose sigma
follows the ratio, then a bicubic resize (from a 3x ratio, pyrDown steps first). libjpeg's DCT-scaled decode (IMREAD_REDUCED_*) is used only down to twice
the target, the same rule as Pillow's `draft` on the other path: the scaled IDCT is a block
average and aliases when it does the whole reduction.

What it takes: only what it is sure to decode exactly like the Pillow path would. A JPEG that
Pillow reads as 3-channel RGB (not greyscale, CMYK or multi-picture) and whose marker structure
is whole up to an EOI (libjpeg fills a truncated scan with grey and OpenCV returns the partial
image with a warning where Pillow raises, and the same when a stray marker interrupts a scan:
`jpeg_well_formed` sends such files to Pillow, which rejects them as it always has).
Everything else, and anything OpenCV fails to decode to the expected size, returns None and the
caller uses the Pillow path. Header checks (pixel cap, sides, aspect) run before this, on
Pillow's parse of the header. EXIF orientation is applied here with the same transposes as
`ImageOps.exif_transpose`, after the downscale (the filter is separable with per-axis sigma,
so resizing first and transposing after gives the same pixels for less work).

Known difference: for a JPEG that is corrupt but still decodes, libjpeg's warning goes to
stderr from OpenCV (Pillow silences it); the row's outcome is the same on both paths.
"""

from __future__ import annotations

import math

import numpy as np

from weakly_base.jpeg_segments import SOS, STANDALONE, header_segments

try:  # the `ingest` extra installs it; without it every image takes the Pillow path
    import cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is absent
    cv2 = None
else:
    # One image per task on one core: Ray runs one worker per CPU, so OpenCV's own thread pool
    # (all cores by default) would only oversubscribe them.
    cv2.setNumThreads(1)

# Total Gaussian blur of a downscale by ratio r, as sigma = k r input px (the prefilter, plus
# on the pyramid path what pyrDown and the final linear interpolation add). Chosen by
# benchmarks/image_path.py against the Pillow path (JPEG draft to 2x + Pillow bilinear); the
# figures are in BENCHMARKS.md ("The image path").
SIGMA_PER_RATIO = 0.45
# Ratios from which whole 2x steps go through pyrDown; below, one Gaussian at full size. From
# 2.0 the pyramid alone blurs more than k r wants at ratios just over 2 (~0.7 of Pillow's
# contrast at 0.8x Nyquist); from 3.0 the pyramid step leaves >= 1.5 to the last step, and a
# full-size Gaussian up to 3.0 still fits 7 taps.
PYRAMID_FROM = 3.0
# Half-width of the Gaussian kernel in sigmas: 2.0 keeps 5 taps up to sigma 1.0 (ratio ~2.2),
# where OpenCV's fixed-point small-kernel path applies (7 taps cost ~1.5x); it measured no
# more aliasing than 2.5 (benchmarks/image_path.py).
KERNEL_REACH = 2.0
# A prefilter below this sigma changes almost nothing and is skipped.
MIN_SIGMA = 0.25
# Variance (input px^2) that linear interpolation adds on average (a sample at fractional
# position p has variance p (1 - p); 1/6 over every phase), counted on the pyramid path.
_LINEAR_VARIANCE = 1.0 / 6.0
REDUCED_FLAGS = (
    {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }
    if cv2 is not None
    else {}
)

# EXIF orientation -> array op on an H x W x C image (the transposes `ImageOps.exif_transpose`
# applies: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 270, 7 transverse, 8 rotate 90).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def available() -> bool:
    return cv2 is not None


def reduced_factor(w: int, h: int, target: int, margin: float) -> int:
    """Largest libjpeg scale 1/k (k in 8, 4, 2) whose shorter side stays >= margin x target;
    1 when none does. Matches Pillow's `draft` for the same request."""
    short = min(w, h)
    for k in (8, 4, 2):
        if short // k >= margin * target:
            return k
    return 1


# Segments that may follow a scan before the next one (or before EOI): DHT, DQT, DRI, SOS, COM,
# APPn. Anything else after the first scan (a second SOF, DNL, an unknown marker) is declined.
_BETWEEN_SCANS = np.zeros(256, dtype=bool)
_BETWEEN_SCANS[[0xC4, 0xDB, 0xDD, 0xDA, 0xFE, *range(0xE0, 0xF0)]] = True
# In entropy-coded data a data FF is stuffed as FF 00, restart markers are FF D0-D7 and FF FF is
# fill: none of these ends a scan.
_IN_SCAN = np.zeros(256, dtype=bool)
_IN_SCAN[[0x00, *range(0xD0, 0xD8), 0xFF]] = True


def jpeg_well_formed(data: bytes) -> bool:
    """True when the JPEG's marker structure is one libjpeg decodes without complaint: header
    segments up to the first scan, then scans separated only by table/restart/comment segments,
    then an EOI marker (what follows it is ignored, as every decoder does).

    Why: OpenCV returns whatever libjpeg produced when the data ends early or a stray marker
    interrupts a scan (the rest is filled grey, a warning goes to stderr), where Pillow raises.
    A file that fails this check goes to the Pillow path, which then accepts or rejects it as it
    always has; odd structure counts as False, which is always safe. The marker search is one
    vectorised pass (~0.05 ms for 50 kB, where a regex took 1 ms)."""
    n, i = len(data), 0
    for seg in header_segments(data):  # header segments, up to and including the first SOS
        if seg.marker in STANDALONE:
            return False
        i = seg.end
        if seg.marker == SOS:
            break
    else:
        return False
    if i >= n:
        return False
    raw = np.frombuffer(data, dtype=np.uint8, offset=i)
    at = np.flatnonzero(raw[:-1] == 0xFF)
    # Every FF xx that ends a scan, in file order (a run of fill FFs counts once, at its end).
    markers = at[~_IN_SCAN[raw[at + 1]]] + i
    for pos in markers.tolist():
        if pos < i:
            continue  # inside a segment skipped below
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if not _BETWEEN_SCANS[marker] or pos + 4 > n:
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return False
        i = pos + 2 + length
    return False


def _sigma(ratio: float, k: float, carried: float) -> float:
    """Prefilter sigma (px of the image it runs on) for a `ratio` downscale whose total blur
    should be k x ratio, less what earlier steps and the interpolation add (`carried`)."""
    return math.sqrt(max(0.0, (k * ratio) ** 2 - carried))


def _ksize(sigma: float) -> int:
    """Odd kernel size reaching KERNEL_REACH sigma."""
    return 2 * math.ceil(KERNEL_REACH * sigma - 1e-9) + 1 if sigma > 0 else 1


def _blur(img: np.ndarray, sx: float, sy: float) -> np.ndarray:
    if sx < MIN_SIGMA and sy < MIN_SIGMA:
        return img
    sx, sy = max(sx, 1e-3), max(sy, 1e-3)
    return cv2.GaussianBlur(img, (_ksize(sx), _ksize(sy)), sigmaX=sx, sigmaY=sy)


def gaussian_resize(
    img: np.ndarray,
    size: tuple[int, int],
    k: float = SIGMA_PER_RATIO,
    interpolation: int | None = None,
) -> np.ndarray:
    """Downscale `img` to `size` (w, h) in one step: Gaussian low-pass with sigma k x ratio per
    axis, then `resize` (bicubic unless `interpolation` says otherwise), whose sampling grid is
    Pillow's (output pixel u centred on input (u + 0.5) x ratio - 0.5).

    Bicubic because it adds almost no blur of its own, so the Gaussian alone sets the trade:
    linear interpolation blurs by a phase-dependent amount (none on samples that land on an
    input pixel, where the finest detail passes untouched), which a Gaussian cannot balance at
    every ratio (0.80 of Pillow's contrast at 0.8x Nyquist at ratio 1.56 for the same
    aliasing, against 0.92 with bicubic)."""
    h, w = img.shape[:2]
    img = _blur(img, _sigma(w / size[0], k, 0.0), _sigma(h / size[1], k, 0.0))
    flag = cv2.INTER_CUBIC if interpolation is None else interpolation
    return cv2.resize(img, size, interpolation=flag)


def downscale(
    img: np.ndarray,
    size: tuple[int, int],
    *,
    k: float = SIGMA_PER_RATIO,
    pyramid_from: float = PYRAMID_FROM,
) -> np.ndarray:
    """Antialiased downscale of `img` to `size` (w, h) on Pillow's sampling grid.

    Below `pyramid_from` (either axis): `gaussian_resize`. From it: whole 2x steps by `pyrDown`
    (a 5-tap binomial, variance 1 px^2, computed only at the kept pixels: ~4x cheaper than a
    blur at full size) while the ratio left is still >= `pyramid_from`, then a Gaussian at the
    reduced size for the rest of the blur that k x ratio calls for (the pyramid's counted),
    then linear interpolation by `warpAffine` with the offset that puts each output pixel
    where Pillow's grid has it: pyrDown centres its pixel j on input 2j, not 2j + 0.5, so a
    plain `resize` from the pyramid would sit up to ~0.2 output px off (bicubic `warpAffine`
    would be sharper but cost 2-3 ms)."""
    h0, w0 = img.shape[:2]
    rx, ry = w0 / size[0], h0 / size[1]
    if rx < pyramid_from or ry < pyramid_from:
        return gaussian_resize(img, size, k)
    level, carried = 0, 0.0
    while rx / (1 << level) >= pyramid_from and ry / (1 << level) >= pyramid_from:
        img = cv2.pyrDown(img)
        level += 1
        carried = (carried + 1.0) / 4.0  # the pyramid's variance so far, in this level's px^2
    f = float(1 << level)
    carried += _LINEAR_VARIANCE
    img = _blur(img, _sigma(rx / f, k, carried), _sigma(ry / f, k, carried))
    # Output pixel u sits at input x0 = (u + 0.5) rx - 0.5; pyramid pixel j at input f j.
    m = np.array([[rx / f, 0.0, (0.5 * rx - 0.5) / f], [0.0, ry / f, (0.5 * ry - 0.5) / f]])
    return cv2.warpAffine(
        img,
        m,
        size,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def decode_reduced(data: bytes, w: int, h: int, k: int) -> np.ndarray | None:
    """BGR pixels of a w x h JPEG, DCT-scaled by 1/k (k in 1, 2, 4, 8), EXIF ignored; None
    when OpenCV fails or returns an unexpected size."""
    flag = REDUCED_FLAGS[k] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        return None
    if img is None or img.ndim != 3 or img.shape != (-(-h // k), -(-w // k), 3):
        return None
    return img


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    op = _ORIENT.get(orientation)
    return np.ascontiguousarray(op(img)) if op is not None else img


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise ValueError("cv2.imencode failed")
    return buf.tobytes()


def to_gray(bgr: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, the weights Pillow's "L" uses (OpenCV rounds in 14-bit fixed point,
    Pillow in 16-bit: a level apart at most), for the perceptual hash."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
