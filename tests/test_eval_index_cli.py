"""`weakly eval-index` end to end through weakly.cli.main."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import skimage.data
from PIL import Image

from weakly.cli import main


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_build_query_stats(tmp_path, capsys):
    astro = Image.fromarray(skimage.data.astronaut())
    coffee = Image.fromarray(skimage.data.coffee())
    rocket = Image.fromarray(skimage.data.rocket())
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "astro.jpg").write_bytes(encode(astro))
    (folder / "zero.jpg").write_bytes(b"")
    tar_path = tmp_path / "test.tar"
    with tarfile.open(tar_path, "w") as tar:
        data = encode(coffee, "PNG")
        info = tarfile.TarInfo("0001.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "r.jpg").write_bytes(encode(rocket))
    pq.write_table(pa.table({"id": ["r1"], "path": ["r.jpg"]}), tmp_path / "extra.parquet")
    idx = tmp_path / "eval.idx"

    rc = main(
        [
            "eval-index", "build", "--eval", f"val={folder}", "--eval", f"test={tar_path}",
            "--eval", f"extra={tmp_path / 'extra.parquet'}", "--out", str(idx), "--radius", "9",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0 and idx.exists()
    assert "val: 1 images, 1 failed" in out
    assert "zero.jpg" in err and "empty" in err

    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "flipped.jpg").write_bytes(encode(astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    (queries / "other.jpg").write_bytes(encode(Image.fromarray(skimage.data.camera())))
    (queries / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc = main(["eval-index", "query", "--index", str(idx), str(queries), str(tmp_path / "r.jpg")])
    out, err = capsys.readouterr()
    assert rc == 0
    lines = [line.split("\t") for line in out.strip().splitlines()[1:]]
    found = {(r[0].rsplit("/", 1)[-1], r[2], r[3], r[5]) for r in lines}
    assert ("flipped.jpg", "val", "astro.jpg", "hflip") in found
    assert ("r.jpg", "extra", "r1", "orig") in found
    assert not any(r[0].endswith("other.jpg") for r in lines)
    assert "skipped" in err and "bad.png" in err

    rc = main(["eval-index", "stats", "--index", str(idx)])
    stats = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert stats["radius"] == 9 and stats["hash_version"] == "weakly-phash-v1"
    assert stats["eval_sets"] == {
        "val": {"images": 1, "failures": 1},
        "test": {"images": 1, "failures": 0},
        "extra": {"images": 1, "failures": 0},
    }
    assert stats["failed_items"][0]["item"] == "zero.jpg"


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["eval-index", "stats", "--index", str(tmp_path / "none.idx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err
    rc = main(["eval-index", "build", "--eval", f"x={tmp_path / 'missing'}", "--out", "o.idx"])
    assert rc == 2
    assert "eval source not found" in capsys.readouterr().err
    (tmp_path / "plain.bin").write_bytes(b"abc")
    rc = main(["eval-index", "build", "--eval", f"x={tmp_path / 'plain.bin'}", "--out", "o.idx"])
    assert rc == 2
    assert "must be a folder, a tar file or a .parquet" in capsys.readouterr().err
