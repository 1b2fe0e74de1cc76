"""The real loader: agreement with iter_sample_keys, workers, resume, corrupt JPEGs, URLs."""

from __future__ import annotations

import copy
import io
import itertools
import tarfile

import fsspec
import numpy as np
import pytest
import torch

from train.data import LoaderConfig, TrainLoader, iter_sample_keys
from train.shards import Dataset, iter_tar_samples
from train.transforms import DECODE_ERRORS, decode_crop_cpu, header_size
from weakly.fixtures import build_fixture, make_jpeg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    return str(build_fixture(tmp_path_factory.mktemp("loader") / "ds", samples=120, seed=2))


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory):
    return str(
        build_fixture(tmp_path_factory.mktemp("corrupt") / "ds", samples=80, corrupt=6, seed=4)
    )


def _cfg(**kw) -> LoaderConfig:
    base = dict(batch_size=6, image_size=24, shuffle_buffer=20, seed=1)
    base.update(kw)
    return LoaderConfig(**base)


def _keys(loader, steps):
    out = []
    for batch in itertools.islice(loader, steps):
        out.append(list(batch["keys"]))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_agrees_with_iter_sample_keys(clean_dir, workers):
    loader = TrainLoader(Dataset(clean_dir), _cfg(workers=workers))
    got = list(itertools.chain.from_iterable(_keys(loader, 9)))
    want = list(
        itertools.islice(
            iter_sample_keys(clean_dir, seed=1, batch_size=6, workers=workers, shuffle_buffer=20),
            54,
        )
    )
    assert got == want


def test_batches_hold_uint8_images_and_padded_targets(clean_dir):
    batch = next(iter(TrainLoader(Dataset(clean_dir), _cfg())))
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (6, 24, 24, 3)
    t = batch["targets"]
    assert t.dtype == torch.long and t.shape[0] == 6
    assert ((t >= 0) | (t == -1)).all() and (t[:, 0] >= 0).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_with_the_same_batches(clean_dir, workers):
    ds = Dataset(clean_dir)
    full = TrainLoader(ds, _cfg(workers=workers))
    batches, state = [], None
    for i, b in enumerate(itertools.islice(full, 9)):
        batches.append((b["keys"], b["images"].clone()))
        if i == 4:  # after 5 batches: odd, so the worker rotation is exercised
            state = copy.deepcopy(full.state_dict())
    resumed = TrainLoader(ds, _cfg(workers=workers))
    resumed.load_state_dict(state)
    again = [(b["keys"], b["images"]) for b in itertools.islice(resumed, 4)]
    for (k1, x1), (k2, x2) in zip(batches[5:], again, strict=True):
        assert k1 == k2 and torch.equal(x1, x2)


def test_resume_with_other_world_size_is_refused(clean_dir):
    ds = Dataset(clean_dir)
    loader = TrainLoader(ds, _cfg())
    next(iter(loader))
    other = TrainLoader(ds, _cfg(world_size=2))
    with pytest.raises(ValueError, match="world_size"):
        other.load_state_dict(loader.state_dict())


def test_corrupt_jpeg_is_skipped_and_counted(corrupt_dir):
    loader = TrainLoader(Dataset(corrupt_dir), _cfg(batch_size=8))
    got = list(itertools.chain.from_iterable(_keys(loader, 30)))
    assert loader.corrupt > 0
    ds = Dataset(corrupt_dir)
    bad = set()
    for shard in range(len(ds.shards.files)):
        for sample in ds.read_shard(shard):
            try:
                header_size(sample.jpg)
            except DECODE_ERRORS:
                bad.add(sample.key)
    assert len(bad) == 6
    stream = list(itertools.islice(iter_sample_keys(corrupt_dir, seed=1, shuffle_buffer=20), 2000))
    # Exactly the index order with the undecodable samples taken out, and each one counted.
    clean_positions = [i for i, k in enumerate(stream) if k not in bad]
    assert got == [stream[i] for i in clean_positions[: len(got)]]
    consumed = stream[: clean_positions[len(got) - 1] + 1]
    assert loader.corrupt == sum(k in bad for k in consumed) > 0


def test_reads_file_and_memory_urls(clean_dir, tmp_path):
    want = _keys(TrainLoader(Dataset(clean_dir), _cfg()), 3)
    assert _keys(TrainLoader(Dataset(f"file://{clean_dir}"), _cfg()), 3) == want
    fs = fsspec.filesystem("memory")
    fs.put(clean_dir, "/weakly-test-ds", recursive=True)
    try:
        assert _keys(TrainLoader(Dataset("memory://weakly-test-ds"), _cfg()), 3) == want
    finally:
        fs.rm("/weakly-test-ds", recursive=True)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        Dataset(str(tmp_path))


def _member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_tar_reader_ignores_unsafe_names_oversize_and_orphans():
    buf = io.BytesIO()
    jpg = make_jpeg(np.random.default_rng(0))
    meta = b'{"labels": [1], "weight": 0.5}'
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _member(tar, "../evil.jpg", jpg)
        _member(tar, "../evil.json", meta)
        _member(tar, "a.b.jpg", jpg)
        _member(tar, "big.jpg", b"x" * 5000)
        _member(tar, "big.json", meta)
        _member(tar, "orphan.json", meta)
        _member(tar, "good.jpg", jpg)
        _member(tar, "good.json", meta)
    buf.seek(0)
    got = list(iter_tar_samples(buf, max_member_bytes=4096))
    assert [s.key for s in got] == ["good"]
    assert got[0].labels == (1,) and got[0].weight == 0.5


def test_draft_decode_matches_full_decode():
    rng = np.random.default_rng(1)
    from PIL import Image

    big = Image.fromarray(
        np.asarray(Image.open(io.BytesIO(make_jpeg(rng)))).repeat(6, 0).repeat(6, 1)
    )
    raw = io.BytesIO()
    big.save(raw, format="JPEG", quality=90)
    a = decode_crop_cpu(raw.getvalue(), np.random.default_rng(2), 32, draft=True).astype(float)
    b = decode_crop_cpu(raw.getvalue(), np.random.default_rng(2), 32, draft=False).astype(float)
    assert a.shape == b.shape == (32, 32, 3)
    assert np.abs(a - b).mean() < 12


class _RangeFile(io.RawIOBase):
    """A file that records the (offset, length) of every read the tar reader makes."""

    def __init__(self, f, reads: list[tuple[int, int]]) -> None:
        self.f, self.reads = f, reads

    def read(self, n=-1):
        at = self.f.tell()
        data = self.f.read(n)
        self.reads.append((at, len(data)))
        return data

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()

    def close(self):
        self.f.close()
        super().close()


class _RecordingDataset(Dataset):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads: list[tuple[int, int]] = []

    def open_shard(self, file: str):
        return _RangeFile(super().open_shard(file), self.reads)


def test_a_visit_reads_only_the_members_it_emits(clean_dir):
    """Positions 1, 3 (twice) and 6 of a shard: their samples come back byte-identical to a
    whole-shard read, no byte of any other member's data passes through the tar reader, and
    nothing past the last wanted member is read."""
    ds = _RecordingDataset(clean_dir)
    shard = int(np.argmax(ds.shards.n))
    rows = ds.index_rows(shard)
    assert len(rows) >= 10
    positions = [1, 3, 3, 6]
    got = list(ds.read_positions(shard, positions))
    whole = {s.key: s for s in Dataset(clean_dir).read_shard(shard)}
    assert [s.key for s in got] == [rows[p].key for p in positions]
    assert all(s.jpg == whole[s.key].jpg and s.labels == whole[s.key].labels for s in got)
    wanted = {rows[p].key for p in positions}
    with tarfile.open(f"{clean_dir}/{ds.shards.files[shard]}") as tar:
        spans = {m.name: (m.offset_data, m.offset_data + m.size) for m in tar.getmembers()}
    read = [(a, a + n) for a, n in ds.reads if n]
    for name, (lo, hi) in spans.items():
        overlaps = any(a < hi and lo < b for a, b in read) and hi > lo
        assert overlaps == (name.rsplit(".", 1)[0] in wanted), name
    last = max(hi for name, (_, hi) in spans.items() if name.rsplit(".", 1)[0] in wanted)
    assert max(b for _, b in read) <= last + 511
    # the whole shard is 3x more than what was read (its other samples' data are skipped)
    assert sum(n for _, n in ds.reads) < sum(hi - lo for lo, hi in spans.values()) / 3
