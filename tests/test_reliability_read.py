"""The trainer's read side under hostile shards and metadata: one bad record costs one record,
shard values are checked against the index, a split with nothing usable stops with one line,
and hostile dataset.json, shard paths and checkpoints are one line each, never a traceback.

Every hostile input is written here, into a copy of a fixture dataset (weakly/fixtures.py).
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import hostile_tars as H
import numpy as np
import pyarrow as pa
import pytest
import torch

from train import sample_checks as sc
from train.checkpoint import sha256_file
from train.cli import main as train_main
from train.data import LoaderConfig, TrainLoader, iter_sample_keys
from train.shards import Dataset
from weakly.cli import main as weakly_main
from weakly.fixtures import build_fixture, write_index_table
from weakly_base import index_tables as tables
from weakly_base import shard_format as fmt

torch.set_num_threads(1)
CLASSES = 1000


def _read_tar(path: Path) -> list[tuple[str, bytes, dict]]:
    return list(fmt.iter_tar_records(path.open("rb")))


def _write_tar(path: Path, samples: list[tuple[str, bytes, dict | bytes]]) -> list[int]:
    """Rewrite a shard from (key, jpg, meta) with raw json where given; returns each sample's
    byte offset, so a test can cut inside a chosen one."""
    offsets, parts, at = [], [], 0
    for key, jpg, meta in samples:
        offsets.append(at)
        part = H.sample(key, jpg, meta)
        parts.append(part)
        at += len(part)
    path.write_bytes(b"".join(parts) + H.END)
    return offsets


def _raw(meta: dict, **fields: str) -> bytes:
    """The sample json with some fields replaced by raw JSON text (1e400, NaN, "12")."""
    text = json.dumps({k: v for k, v in meta.items() if k not in fields})
    extra = ", ".join(f'"{k}": {v}' for k, v in fields.items())
    return (text[:-1] + ", " + extra + "}").encode()


# key -> reason code the loader must count it under. Case 3: one bad record, one record.
RECORD_EDITS = {
    "nested": (lambda m: b"[" * 200_000 + b"]" * 200_000, sc.BAD_RECORD),
    "label_1e400": (lambda m: _raw(m, labels="[1e400]"), sc.BAD_LABELS),
    "label_5000": (lambda m: {**m, "labels": [5000]}, sc.BAD_LABELS),
    "weight_inf": (lambda m: _raw(m, weight="Infinity"), sc.BAD_WEIGHT),
    "weight_nan": (lambda m: _raw(m, weight="NaN"), sc.BAD_WEIGHT),
}
# Case 4: values that int()/float() used to turn into other values.
VALUE_EDITS = {
    "labels_string": (lambda m: {**m, "labels": "12"}, sc.BAD_LABELS),
    "labels_float": (lambda m: {**m, "labels": [1.9]}, sc.BAD_LABELS),
    "labels_negative": (lambda m: {**m, "labels": [-3]}, sc.BAD_LABELS),
    "labels_other": (
        lambda m: {**m, "labels": [(m["labels"][0] + 1) % CLASSES]},
        sc.INDEX_MISMATCH,
    ),
    "weight_1e12": (lambda m: {**m, "weight": 1e12}, sc.INDEX_MISMATCH),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A 1000-class dataset whose shards carry every hostile record above, one shard cut in
    the middle of a sample, one that is not a tar, and one index weight of 1e12. Returns the
    folder and {key: reason} of every sample the loader must skip."""
    root = build_fixture(
        tmp_path_factory.mktemp("hostile") / "ds",
        samples=120,
        classes=CLASSES,
        max_shard=12,
        seed=7,
    )
    ds = Dataset(str(root))
    by_size = sorted(range(len(ds.shards.files)), key=lambda i: -ds.shards.n[i])
    edited, cut, garbage = by_size[0], by_size[1], by_size[2]
    bad: dict[str, str] = {}
    # One shard gets every record edit, one value edit each on alternate samples.
    path = root / ds.shards.files[edited]
    samples = [list(s) for s in _read_tar(path)]
    edits = list(RECORD_EDITS.values()) + list(VALUE_EDITS.values())
    for (edit, reason), sample in zip(edits, samples[::1], strict=False):
        sample[2] = edit(sample[2])
        bad[sample[0]] = reason
    assert len(samples) >= len(edits)
    _write_tar(path, samples)
    # One shard cut inside its fourth sample: the first three are read, the rest are not.
    path = root / ds.shards.files[cut]
    samples = _read_tar(path)
    offsets = _write_tar(path, samples)
    path.write_bytes(path.read_bytes()[: offsets[3] + 700])
    bad |= {key: sc.SHARD_UNREADABLE for key, _, _ in samples[3:]}
    # One shard that is not a tar at all.
    path = root / ds.shards.files[garbage]
    bad |= {key: sc.SHARD_UNREADABLE for key, _, _ in _read_tar(path)}
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    # One index weight of 1e12 in a healthy shard (the json agrees with it: both are forged).
    table = tables.read_index(root, tables.SAMPLES)
    rows = table.to_pylist()
    forged = next(r for r in rows if r["shard"] == ds.shards.files[by_size[3]])
    forged["weight"] = 1e12
    write_index_table(root, tables.SAMPLES, pa.Table.from_pylist(rows, schema=table.schema))
    bad[forged["key"]] = sc.BAD_WEIGHT
    return str(root), bad


def _cfg(**kw) -> LoaderConfig:
    return LoaderConfig(**{**dict(batch_size=6, image_size=24, shuffle_buffer=20, seed=1), **kw})


def test_one_bad_record_costs_one_record(hostile):
    """Case 3: nested json, 1e400, a label past the vocabulary, inf/NaN weights, a shard cut
    short, a shard that is not a tar: each row of the index is a Sample or a Skip with its
    reason, and only the hostile ones are skips."""
    root, bad = hostile
    ds = Dataset(root)
    seen: dict[str, str | None] = {}
    for shard in range(len(ds.shards.files)):
        rows = ds.index_rows(shard)
        items = list(ds.read_rows(shard))
        assert [item.key for _, item in items] == [r.key for r in rows]  # positions = index
        for weight, item in items:
            assert 0 <= weight <= ds.shards.weight_sum[shard] + 1e-12
            seen[item.key] = item.reason if isinstance(item, sc.Skip) else None
    assert {k: r for k, r in seen.items() if r is not None} == bad
    assert sum(r is None for r in seen.values()) == ds.num_samples - len(bad)


def test_shard_values_are_checked_against_the_index(hostile):
    """Case 4: labels "12", [1.9], [-3] and another sample's labels are refused, not read as
    (1, 2), 1 or dropped; a json weight of 1e12 disagrees with the index; an index weight of
    1e12 (more than its shard's whole sum) is never used for drawing copies."""
    root, bad = hostile
    ds = Dataset(root)
    forged = next(k for k, r in bad.items() if r == sc.BAD_WEIGHT and "weight" not in k)
    samples = {s.key: s for shard in range(len(ds.shards.files)) for s in ds.read_shard(shard)}
    assert not set(samples) & set(bad)
    rows = {r.key: r for shard in range(len(ds.shards.files)) for r in ds.index_rows(shard)}
    for key, sample in samples.items():
        assert sample.labels == rows[key].labels and sample.weight == rows[key].weight
        assert all(0 <= label < CLASSES for label in sample.labels)
    keys = list(itertools.islice(iter_sample_keys(root, seed=1, shuffle_buffer=20), 3000))
    assert keys.count(forged) < 0.02 * len(keys)  # a typical share, not every batch


def _expected_batches(root: str, bad: dict, workers: int, batches: int, size: int):
    """The batches the loader must give: each logical stream's index-order keys (from
    `iter_sample_keys`, one key per turn, so stream j is every n-th key) with the unusable
    ones taken out; and the skips each stream has counted when its last batch left."""
    n = max(1, workers)
    raw = list(
        itertools.islice(
            iter_sample_keys(root, seed=1, shuffle_buffer=20, workers=workers, batch_size=1),
            4000 * n,
        )
    )
    streams = [raw[j::n] for j in range(n)]
    cursor, out, counted = [0] * n, [], Counter()
    for t in range(batches):
        j, batch = t % n, []
        while len(batch) < size:
            key = streams[j][cursor[j]]
            cursor[j] += 1
            if key in bad:
                counted[bad[key]] += 1
            else:
                batch.append(key)
        out.append(batch)
    return out, dict(sorted(counted.items()))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_skips_and_counts_what_it_cannot_use(hostile, workers):
    """Every batch holds exactly the index-order stream with the unusable samples taken out,
    each counted under its reason, also across worker processes."""
    root, bad = hostile
    loader = TrainLoader(Dataset(root), _cfg(workers=workers))
    got = [list(b["keys"]) for b in itertools.islice(loader, 30)]
    want, counted = _expected_batches(root, bad, workers, 30, 6)
    assert got == want
    assert loader.skipped == counted and len(counted) >= 4


def _train(data: str, out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        data,
        "--model",
        "tiny",
        "--out",
        str(out),
        "--batch-size",
        "6",
        "--image-size",
        "24",
        "--device",
        "cpu",
        "--shuffle-buffer",
        "16",
        "--log-every",
        "1",
        "--steps",
        "3",
        "--workers",
        "1",
        "--ckpt-every",
        "1",
        "--no-eval",
        *extra,
    ]


def test_training_and_eval_on_hostile_shards_finish(hostile, tmp_path, capsys):
    """`python -m train` and `weakly eval` over the hostile shards: both finish, the skips in
    metrics.jsonl, the scores over the usable samples only."""
    root, bad = hostile
    assert train_main(_train(root, tmp_path / "run", "--steps", "10")) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["samples_skipped"] and set(rows[-1]["samples_skipped"]) <= set(bad.values())
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    scores = tmp_path / "eval.json"
    args = [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--shards",
        root,
        "--device",
        "cpu",
        "--image-size",
        "24",
        "--json",
        str(scores),
    ]
    assert weakly_main(args) == 0
    ds = Dataset(root)
    usable = sum(1 for shard in range(len(ds.shards.files)) for _ in ds.read_shard(shard))
    assert usable == ds.num_samples - len(bad)
    assert json.loads(scores.read_text())["images"] == usable
    assert "Traceback" not in capsys.readouterr().err


# -- case 5: a split that yields nothing -----------------------------------------------------


def _copy(root: str, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(root, out)
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> str:
    return str(
        build_fixture(tmp_path_factory.mktemp("small") / "ds", samples=30, max_shard=8, seed=3)
    )


def _no_labels(root: Path) -> None:
    ds = Dataset(str(root))
    for file in ds.shards.files:
        samples = [(k, jpg, {**m, "labels": []}) for k, jpg, m in _read_tar(root / file)]
        _write_tar(root / file, samples)


def _zero_weights(root: Path) -> None:
    table = tables.read_index(root, tables.SAMPLES)
    rows = [{**r, "weight": 0.0} for r in table.to_pylist()]
    write_index_table(root, tables.SAMPLES, pa.Table.from_pylist(rows, schema=table.schema))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["every-jpeg-corrupt", "no-labels", "all-weights-0"])
def test_a_split_with_nothing_usable_stops_with_one_line(small, tmp_path, capsys, case):
    """Case 5: the loader stops, across its worker process, with one line naming the dataset
    and why, instead of drawing forever."""
    if case == "every-jpeg-corrupt":
        root = build_fixture(tmp_path / "ds", samples=30, max_shard=8, seed=3, corrupt=30)
    else:
        root = _copy(small, tmp_path)
        (_no_labels if case == "no-labels" else _zero_weights)(root)
    assert train_main(_train(str(root), tmp_path / "run")) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if not x.startswith("train: warning:")]
    assert len(lines) == 1 and lines[0].startswith("train: error: "), err
    assert "Traceback" not in err
    why = (
        "epochs in a row gave this loader stream no sample"
        if case == "all-weights-0"
        else ("nothing usable left")
    )
    assert str(root) in lines[0] and why in lines[0]


@pytest.mark.parametrize("value", [-5, 0, "NaN", "Infinity", 1e12, '"12"', "true"])
def test_mean_shard_size_must_be_a_shard_mean(small, tmp_path, value):
    root = _copy(small, tmp_path)
    meta = json.loads((root / fmt.DATASET_JSON).read_text())
    text = json.dumps(meta).replace(
        f'"mean_shard_size": {json.dumps(meta["splits"]["train"]["mean_shard_size"])}',
        f'"mean_shard_size": {value}',
    )
    (root / fmt.DATASET_JSON).write_text(text)
    with pytest.raises(ValueError, match="mean_shard_size") as caught:
        Dataset(str(root))
    assert str(root) in str(caught.value) and "\n" not in str(caught.value)


def test_every_shard_weight_zero_is_refused(small, tmp_path):
    root = _copy(small, tmp_path)
    table = tables.read_index(root, tables.SHARDS)
    rows = [{**r, "weight_sum": 0.0} for r in table.to_pylist()]
    write_index_table(root, tables.SHARDS, pa.Table.from_pylist(rows, schema=table.schema))
    with pytest.raises(ValueError, match="weight_sum 0"):
        Dataset(str(root))


# -- case 6: hostile metadata and checkpoints -------------------------------------------------


def _meta_edit(meta: dict, case: str) -> bytes:
    if case == "list":
        return json.dumps([meta]).encode()
    if case == "no-vocabulary":
        return json.dumps({k: v for k, v in meta.items() if k != "vocabulary"}).encode()
    if case == "wnids-not-strings":
        return json.dumps({**meta, "vocabulary": {"wnids": [1, 2]}}).encode()
    if case == "splits-list":
        return json.dumps({**meta, "splits": [1]}).encode()
    if case == "nested":
        return b'{"format": "weakly-shards", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return b"\xff\xfe not json"


@pytest.mark.parametrize(
    "case", ["list", "no-vocabulary", "wnids-not-strings", "splits-list", "nested", "bytes"]
)
def test_a_hostile_dataset_json_is_one_line(small, tmp_path, capsys, case):
    root = _copy(small, tmp_path)
    meta = json.loads((root / fmt.DATASET_JSON).read_text())
    (root / fmt.DATASET_JSON).write_bytes(_meta_edit(meta, case))
    with pytest.raises(ValueError) as caught:
        Dataset(str(root))
    assert f"{root}/dataset.json" in str(caught.value) and "\n" not in str(caught.value)
    assert train_main(_train(str(root), tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


OUTSIDE = [
    "../secret.tar",
    "/etc/passwd.tar",
    "shards/../../secret.tar",
    "s3://bucket/x.tar",
    "file:///tmp/x.tar",
    "shards\\..\\..\\secret.tar",
    "shards/a\0.tar",
    "",
    "shards/x.txt",
]


@pytest.mark.parametrize("file", OUTSIDE)
@pytest.mark.parametrize("where", ["local", "memory"])
def test_shard_paths_outside_the_dataset_are_refused(small, tmp_path, file, where):
    """An index entry that would read outside the dataset root (a valid shard is waiting
    there) is refused at open, before any shard is read."""
    root = _copy(small, tmp_path)
    first = Dataset(str(root)).shards.files[0]
    shutil.copy(root / first, tmp_path / "secret.tar")
    table = tables.read_index(root, tables.SHARDS)
    rows = table.to_pylist()
    rows[0]["file"] = file
    write_index_table(root, tables.SHARDS, pa.Table.from_pylist(rows, schema=table.schema))
    url = str(root)
    if where == "memory":
        import fsspec

        memory = fsspec.filesystem("memory")
        memory.put(str(tmp_path), f"/r15a-{tmp_path.name}", recursive=True)
        url = f"memory://r15a-{tmp_path.name}/ds"
    try:
        with pytest.raises(ValueError, match="inside the dataset") as caught:
            Dataset(url, rows[0]["split"])
        assert "\n" not in str(caught.value)
    finally:
        if where == "memory":
            memory.rm(f"/r15a-{tmp_path.name}", recursive=True)


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert train_main(_train(small, out)) == 0
    return out / "checkpoints" / "last.pt"


def _forged(ckpt_path: Path, tmp_path: Path, edit) -> Path:
    """A copy of the checkpoint edited by `edit(dict)`, with a matching checksum marker (so
    it is the content, not a torn file, that is wrong)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    edit(ckpt)
    path = tmp_path / "forged.pt"
    torch.save(ckpt, path)
    path.with_name(path.name + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")
    return path


def _set_stream(ckpt: dict, **fields) -> None:
    ckpt["loader"][0]["streams"][0].update(fields)


CHECKPOINT_EDITS = {
    "image-size-200000": lambda c: c["args"].update(image_size=200_000),
    "no-loader": lambda c: c.pop("loader"),
    "loader-not-a-list": lambda c: c.update(loader={"a": 1}),
    "stream-a-string": lambda c: c["loader"][0]["streams"].__setitem__(0, "x"),
    "cursor-negative": lambda c: _set_stream(c, t=-1),
    "epoch-a-string": lambda c: _set_stream(c, epoch="7"),
    "open-piece-not-opened": lambda c: _set_stream(c, open=torch.tensor([[5, 0]]), next_piece=1),
    "buffer-of-floats": lambda c: _set_stream(c, buffer=torch.zeros(3, 3)),
    "buffer-past-the-shard": lambda c: _set_stream(
        c, buffer=torch.tensor([[0, 0, 0, 1_000_000]]), t=1, next_piece=0, open=[]
    ),
    "streams-missing": lambda c: c["loader"][0].pop("streams"),
    "weights-of-another-shape": lambda c: c["model"].update(
        {k: torch.zeros(1) for k in list(c["model"])[:1]}
    ),
    "step-negative": lambda c: c.update(step=-3),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(CHECKPOINT_EDITS))
def test_a_hostile_checkpoint_is_one_line(small, trained, tmp_path, capsys, case):
    """Case 6: `weakly eval` with a recorded image_size of 200000, and resuming from a
    broken loader state: one line each, exit 2 (the buffer case fails inside the worker)."""
    forged = _forged(trained, tmp_path, CHECKPOINT_EDITS[case])
    if case == "image-size-200000":
        rc = weakly_main(
            [
                "eval",
                "--checkpoint",
                str(forged),
                "--shards",
                small,
                "--split",
                "train",
                "--device",
                "cpu",
            ]
        )
        want = "image_size"
    else:
        rc = train_main(_train(small, tmp_path / "run", "--resume", str(forged), "--steps", "6"))
        want = {"buffer-past-the-shard": "shuffle buffer", "open-piece-not-opened": "other data"}
        want = want.get(case, str(forged))
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "warning" not in x]
    assert rc == 2 and len(lines) == 1 and want in lines[0], err
    assert "Traceback" not in err
