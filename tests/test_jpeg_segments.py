"""The shared JPEG header walk (weakly_base/jpeg_segments.py) on real photos: it reaches the
first scan of baseline and progressive files, its frame segment holds Pillow's size, and every
kind of damage ends it early, without a scan, so its callers fall back to Pillow."""

from __future__ import annotations

import pytest
from ingest_fixtures import encode, photo

from weakly_base.jpeg_segments import SOS, STANDALONE, header_segments


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"quality": 60, "subsampling": 0}])
def test_walk_reaches_the_first_scan_and_the_frame_holds_pillows_size(options):
    img = photo(1, 240)
    data = encode(img, "JPEG", **options)
    segs = list(header_segments(data))
    assert segs[-1].marker == SOS and segs[0].start == 2
    for a, b in zip(segs, segs[1:], strict=False):
        assert b.start == a.end  # contiguous: no bytes skipped or read twice
    frames = [s for s in segs if s.marker in (0xC0, 0xC2)]
    assert len(frames) == 1
    f = frames[0].start
    assert ((data[f + 7] << 8) | data[f + 8], (data[f + 5] << 8) | data[f + 6]) == img.size
    assert all(s.length == ((data[s.start + 2] << 8) | data[s.start + 3]) for s in segs)


def test_fill_bytes_and_standalone_markers_are_passed_over():
    data = encode(photo(0, 120), "JPEG")
    plain = list(header_segments(data))
    padded = data[:2] + b"\xff\xff\xff\xd0" + data[2:]  # two fill bytes, then RST0
    segs = list(header_segments(padded))
    assert segs[0].marker in STANDALONE and segs[0].length == 0
    assert [s.marker for s in segs[1:]] == [s.marker for s in plain]
    assert segs[-1].marker == SOS


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:1],  # cut inside SOI
        lambda d: b"\x89PNG" + d[4:],  # not a JPEG
        lambda d: d[:2] + b"\x00" + d[3:],  # no marker where one must be
        lambda d: d[:4] + b"\x00\x01" + d[6:],  # a length under 2
        lambda d: d[:2] + b"\xff\xd8" + d[2:],  # a second SOI
        lambda d: d[:2] + b"\xff\xd9" + d[2:],  # EOI before any scan
        lambda d: d[:40],  # cut inside the header
    ],
)
def test_damage_ends_the_walk_before_any_scan(damage):
    data = damage(encode(photo(0, 120), "JPEG"))
    assert all(s.marker != SOS for s in header_segments(data))
