"""Zone plates through the real `weakly ingest` to 256 px: rings finer than the new resolution
fade to grey (aliasing <= 10 of 127.5), for a JPEG source (the OpenCV path, DCT-scaled decode)
and a PNG one (the Pillow path)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from bench_tools import load_benchmark
from PIL import Image

from pipeline.images import prepare_image
from pipeline.ingest import IngestConfig, RunOptions, ingest

PLATES = (600, 2048)


@pytest.fixture(scope="module")
def aliasing_bench():
    return load_benchmark("aliasing")


def test_the_measure_can_fail(aliasing_bench):
    """Nearest-neighbour downscaling aliases and the measure says so; a flat image is 0."""
    for side in PLATES:
        plate = aliasing_bench.zone_plate(side)
        assert aliasing_bench.aliasing(plate.resize((256, 256), Image.NEAREST), side) > 50
        assert aliasing_bench.aliasing(Image.new("RGB", (256, 256), (127, 127, 127)), side) == 0


def test_zone_plates_through_ingest(tmp_path, lexicon_dir, ray_local, aliasing_bench):
    rows = []
    for side in PLATES:
        for fmt in ("JPEG", "PNG"):
            path = tmp_path / f"plate{side}.{fmt.lower()}"
            path.write_bytes(aliasing_bench.encoded(aliasing_bench.zone_plate(side), fmt))
            rows.append(
                {"key": f"p{side}{fmt.lower()}", "path": str(path), "tags": ["#AnalogClock"]}
            )
    manifest = tmp_path / "plates.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = IngestConfig(lexicon_dir=str(lexicon_dir), vocab="in1k")
    summary = ingest([str(manifest)], tmp_path / "out", config, RunOptions(progress=False))
    assert summary.written == len(rows)
    stored = {}
    for tar_path in (tmp_path / "out" / "shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    stored[member.name[:-4]] = tar.extractfile(member).read()
    figures = {}
    for key, data in stored.items():
        img = Image.open(io.BytesIO(data))
        assert min(img.size) == 256
        side = int(key[1:].removesuffix("jpeg").removesuffix("png"))
        figures[key] = aliasing_bench.aliasing(img, side)
    assert len(figures) == len(rows)
    assert max(figures.values()) <= 10, figures
    # The JPEG plates went through the OpenCV path (pipeline/fast_images.py), the PNGs through
    # Pillow: what ingest stored is byte for byte what that path makes.
    for side in PLATES:
        data = (tmp_path / f"plate{side}.jpeg").read_bytes()
        assert stored[f"p{side}jpeg"] == prepare_image(data, config.image).jpeg
        assert stored[f"p{side}jpeg"] != prepare_image(data, config.image, fast=False).jpeg
        png = (tmp_path / f"plate{side}.png").read_bytes()
        assert stored[f"p{side}png"] == prepare_image(png, config.image, fast=False).jpeg
