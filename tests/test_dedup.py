"""Eval variants and EvalIndex: DCT-derived flips, exact search (flat and multi-index), I/O."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from pipeline.dedup import (
    DEFAULT_RADIUS,
    DIHEDRAL,
    VARIANTS,
    EvalIndex,
    eval_variant_hashes,
    eval_variants,
    find_uniform_border,
)
from pipeline.hamming_search import (
    MultiIndex,
    choose_chunks,
    chunk_radii,
    flat_range_search,
)
from pipeline.phash import hamming, phash

PIL_OPS = {
    "hflip": Image.Transpose.FLIP_LEFT_RIGHT,
    "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
    "rot180": Image.Transpose.ROTATE_180,
    "transpose": Image.Transpose.TRANSPOSE,
    "rot90": Image.Transpose.ROTATE_90,
    "rot270": Image.Transpose.ROTATE_270,
    "transverse": Image.Transpose.TRANSVERSE,
}


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    names = ("astronaut", "coffee", "rocket", "camera")
    return {n: Image.fromarray(getattr(skimage.data, n)()) for n in names}


def variant_map(data: bytes) -> dict[str, int]:
    hashes, codes = eval_variants(data)
    return {VARIANTS[c]: int(h) for h, c in zip(hashes, codes, strict=True)}


def test_dct_flip_variants_equal_hashing_the_transformed_image(photos):
    # Lossless PNG: the DCT-domain variant equals the hash of the real transform exactly.
    for img in photos.values():
        hashes, codes = eval_variants(encode(img))
        for name, op in PIL_OPS.items():
            actual = phash(encode(img.transpose(op)))
            stored = {VARIANTS[c]: h for h, c in zip(hashes, codes, strict=True)}
            # a variant equal to an earlier one is stored once, under the earlier name
            assert name in stored or actual in hashes
            assert actual in hashes


def test_dct_flip_variants_on_jpeg_within_small_tolerance(photos):
    for img in photos.values():
        hashes = eval_variant_hashes(encode(img, "JPEG", quality=90))
        for op in PIL_OPS.values():
            q = phash(encode(img.transpose(op), "JPEG", quality=90))
            # measured 0-12: sides that are not multiples of 8 (rocket is 427 px high) put the
            # flipped image's JPEG blocks on another grid, which the 1/8 draft decode averages
            assert hamming(q, hashes).min() <= 12


def test_variants_catch_crops_and_borders_that_plain_phash_misses(photos):
    img = photos["astronaut"]
    w, h = img.size
    eval_bytes = encode(img, "JPEG", quality=95)
    hashes = eval_variant_hashes(eval_bytes)
    plain = phash(eval_bytes)
    crop = phash(encode(img.crop((0, 0, int(w * 0.9), int(h * 0.9))), "JPEG", quality=90))
    framed = phash(encode(ImageOps.expand(img, border=26, fill="black"), "JPEG", quality=90))
    for q in (crop, framed):
        assert hamming(q, hashes).min() <= DEFAULT_RADIUS
    assert hamming(crop, plain) > DEFAULT_RADIUS


def test_uniform_border_detection_and_trimmed_variant(photos):
    grey = np.asarray(photos["camera"])
    assert find_uniform_border(grey) is None
    framed = np.pad(grey, ((20, 20), (30, 30)), constant_values=255)
    assert find_uniform_border(framed) == (30, 20, 30 + 512, 20 + 512)
    hashes = eval_variant_hashes(encode(Image.fromarray(framed)))
    # the trimmed hash is stored (or equals a crop variant, which is then kept instead)
    assert hamming(phash(encode(photos["camera"])), hashes).min() == 0


def random_hashes(rng, n):
    return rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)


def planted(rng, db, n, max_flips):
    """Queries that are db entries with 0..max_flips random bits flipped."""
    src = db[rng.integers(0, len(db), n)]
    out = src.copy()
    for i in range(n):
        bits = rng.choice(64, rng.integers(0, max_flips + 1), replace=False)
        for b in bits:
            out[i] ^= np.uint64(1) << np.uint64(b)
    return out


def brute(queries, db, r):
    d = np.bitwise_count(queries[:, None] ^ db[None, :])
    qi, di = np.nonzero(d <= r)
    return set(zip(qi.tolist(), di.tolist(), d[qi, di].tolist(), strict=True))


@pytest.mark.parametrize("radius", [0, 3, 8, 10, 13])
@pytest.mark.parametrize("m", [3, 4, 5, 7, 11])
def test_multi_index_is_exact_against_brute_force(radius, m):
    rng = np.random.default_rng(radius * 100 + m)
    db = random_hashes(rng, 3000)
    db[:50] = db[50:100] ^ np.uint64(0b1011)  # near neighbours inside the db
    queries = np.concatenate([planted(rng, db, 300, radius + 2), random_hashes(rng, 100)])
    expect = brute(queries, db, radius)
    q, d, dist = MultiIndex(db, m).range_search(queries, radius, block_probes=997)
    got = list(zip(q.tolist(), d.tolist(), dist.tolist(), strict=True))
    assert len(got) == len(set(got)), "a pair was reported twice"
    assert set(got) == expect
    q, d, dist = flat_range_search(queries, db, radius, block_pairs=10_000)
    assert set(zip(q.tolist(), d.tolist(), dist.tolist(), strict=True)) == expect


def test_chunk_radii_satisfy_pigeonhole():
    for m in range(1, 12):
        for r in range(0, 20):
            assert sum(k + 1 for k in chunk_radii(m, r)) == r + 1


def test_cost_model_picks_flat_for_tiny_and_mih_for_large():
    assert choose_chunks(50, 10) == 0
    assert choose_chunks(1_000_000, 10) >= 2


def synthetic_index(rng, n_images=400, per_image=5):
    hashes = random_hashes(rng, n_images * per_image)
    hashes[per_image : 2 * per_image] = hashes[:per_image]  # two images share all hashes
    images = np.repeat(np.arange(n_images), per_image)
    variants = np.tile(np.arange(per_image), n_images).astype(np.uint8)
    image_set = (np.arange(n_images) % 2).astype(np.int32)
    ids = np.array([f"img{i:04d}" for i in range(n_images)])
    return (
        EvalIndex(
            hashes=hashes,
            images=images,
            variants=variants,
            image_set=image_set,
            image_ids=ids,
            set_names=["even", "odd"],
        ),
        hashes,
        images,
    )


@pytest.mark.parametrize("method", ["flat", "mih:3", "mih:5", "auto"])
def test_index_search_matches_brute_force_per_image(method):
    rng = np.random.default_rng(7)
    index, hashes, images = synthetic_index(rng)
    assert len(index.unique_hashes) == len(hashes) - 5  # identical hashes collapsed
    queries = np.concatenate([planted(rng, hashes, 200, 12), random_hashes(rng, 50)])
    for radius in (6, 10):
        m = index.search(queries, radius, method=method)
        d = np.bitwise_count(queries[:, None] ^ hashes[None, :])
        expect = {}
        for q, e in zip(*np.nonzero(d <= radius), strict=True):
            key = (int(q), int(images[e]))
            expect[key] = min(expect.get(key, 99), int(d[q, e]))
        got = {
            (int(q), int(i)): int(dd)
            for q, i, dd in zip(m.query_rows, m.image_index, m.distances, strict=True)
        }
        assert len(got) == len(m)
        assert got == expect
        # both images that share hashes are reported
        rows = m.rows()
        assert all(s == ("even" if int(i[3:]) % 2 == 0 else "odd") for _, s, i, _ in rows)
        mask = index.near_copy_mask(queries, radius)
        assert mask.tolist() == [q in {k[0] for k in expect} for q in range(len(queries))]


def test_save_load_roundtrip_and_pickle(tmp_path):
    rng = np.random.default_rng(3)
    index, hashes, _ = synthetic_index(rng)
    queries = planted(rng, hashes, 100, 10)
    before = index.search(queries).rows()
    path = tmp_path / "eval.idx"
    index.save(path)
    loaded = EvalIndex.load(path)
    assert loaded.search(queries).rows() == before
    assert loaded.stats()["unique_hashes"] == index.stats()["unique_hashes"]
    clone = pickle.loads(pickle.dumps(loaded))
    assert clone.search(queries, method="mih:4").rows() == before
    assert len(pickle.dumps(loaded)) < 10 * loaded.stats()["bytes"] + 10_000


def test_load_rejects_other_files(tmp_path):
    bogus = tmp_path / "x.idx"
    bogus.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a weakly eval index"):
        EvalIndex.load(bogus)
    with pytest.raises(FileNotFoundError):
        EvalIndex.load(tmp_path / "missing.idx")


def test_build_from_folder_tar_parquet_with_failures(tmp_path, photos):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encode(photos["astronaut"], "JPEG", quality=90))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "readme.txt").write_text("ignored: not an image name")
    tar_path = tmp_path / "set.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, img in (("k1.png", photos["coffee"]), ("k2.jpg", photos["rocket"])):
            data = encode(img, "PNG" if name.endswith("png") else "JPEG")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pq.write_table(
        pa.table(
            {
                "key": ["cam", "tiny"],
                "image": [encode(photos["camera"]), encode(Image.new("L", (2, 2)))],
            }
        ),
        tmp_path / "set.parquet",
    )
    index = EvalIndex.build({"f": folder, "t": tar_path, "p": tmp_path / "set.parquet"})
    assert sorted(index.image_ids.tolist()) == ["a.jpg", "cam", "k1.png", "k2.jpg"]
    assert {(f.eval_set, f.item) for f in index.failures} == {("f", "broken.jpg"), ("p", "tiny")}
    assert "too small" in next(f.reason for f in index.failures if f.item == "tiny")
    q = phash(encode(photos["rocket"].transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG"))
    rows = index.search(np.array([q], dtype=np.uint64)).rows()
    assert rows[0][1:3] == ("t", "k2.jpg")
    index.save(tmp_path / "e.idx")
    assert EvalIndex.load(tmp_path / "e.idx").failures == index.failures


def test_variant_names_cover_dihedral_group():
    assert list(DIHEDRAL) == list(VARIANTS[:8])
    assert len(set(DIHEDRAL.values())) == 8
