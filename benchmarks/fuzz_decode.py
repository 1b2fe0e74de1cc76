"""Fuzz the decode/validate/hash/encode path (`pipeline.images.prepare_image`) with hypothesis.

Inputs are real encoded images (JPEG, progressive JPEG, PNG, GIF, WEBP, BMP, TIFF made from the
bundled photos) mutated by byte flips, insertions, deletions, truncation, header splices and
forged dimensions. The property: every input either becomes a valid JPEG within the configured
size limits or raises `ImageReject` with a reason. Any other exception, or an output that does
not decode, is a finding and fails the run. Prints outcomes by reason, the slowest input and the
peak memory, against the unmutated seeds as the baseline.

    .venv/bin/python benchmarks/fuzz_decode.py [--examples 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.images import ImageConfig, ImageReject, prepare_image  # noqa: E402
from weakly.photos import bundled_photos  # noqa: E402

CONFIG = ImageConfig(image_size=48, min_side=8, max_pixels=4_000_000)


def seed_images() -> list[bytes]:
    """Small real images in every accepted format; small so each example runs in milliseconds."""
    photo = bundled_photos()[0][1].resize((96, 72))
    out = []
    for fmt, kw in (
        ("JPEG", {"quality": 85}),
        ("JPEG", {"quality": 85, "progressive": True}),
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ):
        buf = io.BytesIO()
        photo.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, pos, n, blob in ops:
        if not buf:
            break
        pos %= len(buf)
        if op == 0:  # flip bits of one byte
            buf[pos] ^= n & 0xFF or 1
        elif op == 1:  # insert bytes
            buf[pos:pos] = blob
        elif op == 2:  # delete a range
            del buf[pos : pos + n]
        elif op == 3:  # truncate
            del buf[pos:]
        elif op == 4:  # overwrite with 0xFF / 0x00 runs (marker soup, zeroed lengths)
            buf[pos : pos + n] = bytes([0xFF if n % 2 else 0x00]) * n
        else:  # forge a 16-bit big-endian field (JPEG/PNG dimensions, segment lengths)
            buf[pos : pos + 2] = (n * 257).to_bytes(2, "big")[:2]
    return bytes(buf)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    op = st.tuples(
        st.integers(0, 5), st.integers(0, 1 << 20), st.integers(0, 255), st.binary(max_size=16)
    )
    return st.builds(
        _mutate, st.sampled_from(seeds), st.lists(op, min_size=1, max_size=6)
    ) | st.binary(max_size=64)


def check(data: bytes, config: ImageConfig = CONFIG) -> str:
    """'ok' or the reject reason; raises AssertionError on a finding."""
    try:
        prepared = prepare_image(data, config)
    except ImageReject as exc:
        assert exc.reason and exc.detail is not None
        return exc.reason
    out = Image.open(io.BytesIO(prepared.jpeg))
    out.load()
    assert out.format == "JPEG" and out.size == (prepared.width, prepared.height)
    assert min(out.size) >= 1 and out.width * out.height <= config.max_pixels
    assert 0 <= prepared.phash < 1 << 64
    return "ok"


def fuzz(examples: int, seed: int | None = 0) -> tuple[Counter, float]:
    """Run `examples` hypothesis examples; return outcomes by reason and the slowest (s)."""
    seeds = seed_images()
    outcomes: Counter = Counter()
    slowest = [0.0]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=seed is not None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs(seeds))
    def run(data: bytes) -> None:
        start = time.perf_counter()
        outcomes[check(data)] += 1
        slowest[0] = max(slowest[0], time.perf_counter() - start)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on every malformed TIFF tag
        run()
    return outcomes, slowest[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=None, help="derandomized run (default: random)")
    args = ap.parse_args()
    seeds = seed_images()
    start = time.perf_counter()
    for data in seeds:
        assert check(data) == "ok"
    base = (time.perf_counter() - start) / len(seeds)
    outcomes, slowest = fuzz(args.examples, args.seed)
    total = sum(outcomes.values())
    print(f"{total} inputs (hypothesis may stop early on small search spaces); no findings")
    for reason, n in outcomes.most_common():
        print(f"  {reason:<20}{n:>8}")
    print(
        f"unmutated seed: {base * 1e3:.1f} ms/image; slowest mutated input {slowest * 1e3:.1f} ms"
    )
    print(f"slowest / seed: {slowest / base:.1f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
