"""Walking a JPEG's header segments by their lengths, without decoding anything.

Ingest asks whether a file can be stored as it is (`pipeline.images.plain_jpeg`) and whether
its structure is whole enough for OpenCV (`pipeline.fast_images.jpeg_well_formed`); the trainer
reads the frame size to draw a crop before decoding (`train.transforms.jpeg_size`). Each walks
the same marker segments; this is that walk, once. Anything odd ends it early, and every
caller treats an early end as "not sure": the slower path (Pillow) then decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

SOI, EOI, SOS, COM = 0xD8, 0xD9, 0xDA, 0xFE
# Markers without a length field: TEM and RST0-7.
STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


class Segment(NamedTuple):
    """One marker segment: its marker byte, where its FF is, and the byte after it (after the
    length-counted payload; `start + 2` for a standalone marker)."""

    marker: int
    start: int
    end: int

    @property
    def length(self) -> int:
        """The segment's length field (payload plus the field itself); 0 when standalone."""
        return self.end - self.start - 2


def header_segments(data: bytes) -> Iterator[Segment]:
    """The segments after SOI, in file order, up to and including the first SOS. Fill bytes
    (FF FF) are passed over. The walk ends early, without an SOS, when the data does not start
    with SOI, a marker is expected and something else is there, a length field is under 2, a
    second SOI or an EOI comes before any scan, or the data ends. A segment's `end` may lie
    past the data's end when its length says so; callers that read its payload check."""
    if not data.startswith(b"\xff\xd8"):
        return
    n, i = len(data), 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == SOI or marker == EOI:
            return
        if marker in STANDALONE:
            yield Segment(marker, i, i + 2)
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            return
        yield Segment(marker, i, i + 2 + length)
        if marker == SOS:
            return
        i += 2 + length
