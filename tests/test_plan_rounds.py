"""Pass 1 as rounds of Ray tasks (pipeline/plan.py) must decide exactly what `plan_labels`
decides with every row in one process: same live rows in the same order, same labels,
weights, buckets, rejects with the same reasons, vocabulary and counts, whatever the number of
key partitions. The manifests put duplicates within and across files, a duplicate of a rejected
row, rows without tags or images, unknown tags and an unreadable file in its way."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import work_layout as lay
from pipeline.ingest_config import IngestConfig, RunOptions
from pipeline.key_hash import key_hashes, key_partition
from pipeline.label_plan import plan_labels
from pipeline.manifest import Columns
from pipeline.parquet_io import read_parquet
from pipeline.pass1 import pass1_file
from pipeline.plan import Plan, run_plan
from pipeline.plan_tasks import read_labelled, row_weights
from pipeline.split import train_mask
from pipeline.weights import VAL_WEIGHT, WeightConfig
from weakly_base.storage import Store

TAGS = ["dog", "cat", "goldfish", "tabby", "beagle", "#brownbear", "ursusarctos", "pizza",
        "banana", "teapot", "volcano", "instagood", "espresso", "zebra", "lemon"]  # fmt: skip


def _rows(seed: int, n: int, prefix: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(0, 4))
        tags = [TAGS[int(j)] for j in rng.zipf(1.6, size=k) % len(TAGS)]
        key = f"{prefix}{i}" if rng.random() < 0.7 else f"shared{int(rng.integers(0, 12))}"
        rows.append({"key": key if rng.random() < 0.9 else None, "url": f"http://x/{i}.jpg",
                     "tags": tags})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifests")
    files = []
    for f, (fmt, n) in enumerate([("parquet", 120), ("jsonl", 90), ("parquet", 300)]):
        rows = _rows(f, n, f"f{f}-")
        if f == 1:  # a rejected row whose key a later live row of another file reuses
            rows[0] = {"key": "dupofrejected", "url": None, "tags": ["beagle"]}
        if f == 2:
            rows[5] = {"key": "dupofrejected", "url": "http://x/d.jpg", "tags": ["beagle"]}
        path = root / f"m{f}.{fmt}"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(str(path))
    bad = root / "m3.parquet"
    bad.write_bytes(b"not parquet at all")
    files.append(str(bad))
    return files


def _reference(files, config, lexicon):
    rows = pa.concat_tables([pass1_file(f, Columns(), lexicon) for f in files])
    return rows, plan_labels(rows, config, lexicon)


def _distributed(ray, files, config, lexicon, out, partitions) -> tuple[Store, Plan]:
    """The plan from Ray tasks, or (`partitions` "driver") from the same rounds run in this
    process, as small jobs run them."""
    store = Store.at(out)
    if partitions == "driver":
        options = RunOptions(progress=False, key_partitions=3)
        return store, run_plan(None, store, files, config, lexicon, options)
    options = RunOptions(progress=False, key_partitions=partitions)
    return store, run_plan(ray, store, files, config, lexicon, options)


CONFIGS = {
    "in1k": IngestConfig(chunk_rows=1),  # 64 rows per labelled part: files span parts
    "top5-noise": IngestConfig(vocab="top:5", label_noise=0.3, seed=3),
    "nouns-mean": IngestConfig(vocab="nouns", weighting=WeightConfig(reduce="mean")),
    "sqrt-holdout-noise": IngestConfig(
        vocab="top:8",
        weighting=WeightConfig("sqrt", epoch_size="1.5x"),
        holdout=0.3,
        label_noise=0.4,
        seed=2,
    ),
    "uniform-holdout": IngestConfig(weighting=WeightConfig("uniform"), holdout=0.2),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("partitions", [1, 5, "driver"])
def test_rounds_decide_what_one_process_decides(
    name, partitions, manifests, tmp_path, ray_local, request
):
    config = CONFIGS[name]
    lexicon = request.getfixturevalue("in1k_lexicon" if name == "in1k" else "nouns_lexicon")
    rows, ref = _reference(manifests, config, lexicon)
    store, plan = _distributed(ray_local, manifests, config, lexicon, tmp_path / "o", partitions)

    assert plan.vocabulary == list(ref.vocabulary)
    assert plan.counts == [ref.counts.get(w, 0) for w in ref.vocabulary]
    assert plan.input_rows == rows.num_rows and plan.to_fetch == int(ref.live.sum())
    assert plan.to_fetch > 50 and plan.input_rows - plan.to_fetch > 50

    labelled = pa.concat_tables(
        [
            read_labelled(store, f, plan.live[f], config.chunk_rows)
            for f in range(len(manifests))
            if plan.live[f]
        ]
    )
    live = np.flatnonzero(ref.live)
    assert labelled["key"].to_pylist() == ref.keys.take(pa.array(live)).to_pylist()
    assert labelled["wnids"].to_pylist() == ref.wnids.take(pa.array(live)).to_pylist()
    weights = row_weights(
        labelled["labels"], labelled["key"], np.asarray(plan.counts), plan.solved_law()
    )
    assert weights.tolist() == ref.weights[live].tolist()  # bit for bit: tallies fold exactly
    assert plan.law == ref.law.as_dict()
    assert plan.noise == ref.noise.report(config.label_noise)
    train = train_mask(labelled["key"], config.holdout)
    assert weights[train].sum() == pytest.approx(plan.law["epoch_size"], rel=1e-12)
    if config.holdout:
        assert (weights[~train] == VAL_WEIGHT).all() and 0 < (~train).sum() < train.sum()
    if config.label_noise:
        assert abs(plan.noise["realised"] - config.label_noise) < 0.15 and plan.noise["replaced"]

    rejects = pa.concat_tables(
        [read_parquet(store, lay.pass1_rejects_part(f)) for f in range(len(manifests))]
    )
    dead = np.flatnonzero(~ref.live)
    expected = ref.rejects.take(pa.array(dead)).to_pylist()
    got = [f"{r}: {d}" if d else r for r, d in zip(rejects["reason"].to_pylist(),
           rejects["detail"].to_pylist(), strict=True)]  # fmt: skip
    assert got == [e if e.partition(": ")[2] else e.partition(": ")[0] for e in expected]
    assert rejects["row"].to_pylist() == rows["row"].take(pa.array(dead)).to_pylist()
    assert "duplicate_key" in plan.rejects_by_reason
    assert any(
        d.startswith(f"first at {manifests[1]} row 0") for d in rejects["detail"].to_pylist()
    ), "a live row whose key a rejected row had first is a duplicate of that row"
    assert "bad_manifest" in plan.rejects_by_reason

    from pipeline.label_plan import buckets_of

    used = sorted(set(ref.buckets[live].tolist()))
    assert plan.buckets == used
    assert buckets_of(weights, plan.reference).tolist() == ref.buckets[live].tolist()
    assert store.exists(lay.REPORT_PNG) and store.get(lay.REPORT_PNG)[:4] == b"\x89PNG"
    assert Plan.load(store) == plan
    if config.chunk_rows == 1:
        assert max(plan.live) > lay.CHUNKS_PER_PART, "a file spans several labelled parts"


def test_key_partitions_are_stable_and_spread():
    keys = pa.array([f"key-{i}" for i in range(20_000)] + [None, "", "é-ü"])
    again = key_hashes(pa.chunked_array([keys.slice(0, 7), keys.slice(7)]))
    assert np.array_equal(key_hashes(keys), again), "chunking must not change a key's hash"
    # pinned values: a key's partition may never change between versions or machines, or a
    # resumed job would look for its keys in the wrong place
    assert key_hashes(pa.array(["a", "key-0"])).tolist() == PINNED
    spread = np.bincount(key_partition(keys, 16), minlength=16)
    assert spread.min() > 0.8 * len(keys) / 16


PINNED = [8777055843625058441, 1072612367759560479]


def test_chunks_map_to_labelled_parts_and_row_groups():
    assert lay.chunk_location(3, 130) == (lay.labelled_part(3, 2), 2)
    assert lay.labelled_parts(3, live=129, chunk_rows=2) == [
        lay.labelled_part(3, 0), lay.labelled_part(3, 1)
    ]  # fmt: skip
    assert lay.labelled_parts(3, live=0, chunk_rows=2) == []
