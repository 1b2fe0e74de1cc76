"""The label plan of an ingest, decided by a driver that holds counts, never rows.

Pass 1 runs as rounds of Ray tasks (pipeline/plan_tasks.py); the driver folds what each task
returns (per-synset counts, reject counts, row totals, the law's tally) and from those alone
picks the vocabulary, the noise marginal, the counts f(s), solves the sampling law (its
threshold t or scale, pipeline/weights.py), and draws the report. Counts come from the `train`
rows only (`--holdout`, by key hash).
Its memory is O(vocabulary + manifest files) whatever the row count (docs/SCALING.md).

The plan is saved as `plan.json` in the output: `--plan-only` stops there, so a user sees the
label space and the weights before fetching an image, and a later run of the same config
starts from it.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from weakly_base.storage import Store

from . import work_layout as lay
from .label_noise import NoiseTally
from .label_plan import choose_vocabulary
from .manifest import MAX_TAG_CHARS
from .phases import PhaseClock, maybe
from .plan_tasks import (
    canonical_file,
    file_seen,
    find_duplicates,
    label_file,
    tally_file,
    weigh_file,
)
from .ray_tasks import Shared, fold_results
from .report import render_report
from .summary import count_rows, noise_rows, row
from .weights import REPLICATING, Law, LawTally, solve_law

PLAN_VERSION = 2  # 2: laws solved on train counts (`law`), noise tally (`noise`)
# A key partition's reduce task holds its keys in memory (~250 bytes a key measured): 16 MiB of
# manifest per partition is ~1.4M rows of a compact parquet manifest (12 bytes a row measured,
# BENCHMARKS.md) and fewer of jsonl/csv, a few hundred MB per reduce task.
MANIFEST_BYTES_PER_PARTITION = 16 << 20
MAX_PARTITIONS = 4096
HIST_BINS = 40
# Pass 1 runs in the driver (`plan_in_driver`) for manifests up to this size: ~300k rows of a
# compact parquet manifest, fewer of jsonl/csv.
PLAN_IN_DRIVER_BYTES = 4 << 20


@dataclass
class Plan:
    """Everything pass 2 and the index need from pass 1, and what a user checks before
    fetching: per-file row counts, the vocabulary with f(s), rejects and the weighting."""

    files: list[str]
    rows: list[int]  # input rows per manifest file
    live: list[int]  # rows per file that go on to pass 2
    vocab: str
    vocabulary: list[str]
    names: list[str]
    counts: list[int]  # f(s): train images per vocabulary entry, after label noise
    weighting: dict  # the WeightConfig asked for
    reference: float  # weight buckets are cut down from this weight
    buckets: list[int]  # weight buckets that hold rows
    rejects_by_reason: dict[str, int]
    partitions: int
    tags_dropped: int = 0  # over-long tags dropped from rows that kept other tags
    law: dict = field(default_factory=dict)  # the solved law (pipeline/weights.py Law)
    noise: dict = field(default_factory=dict)  # label noise: nominal, labels, replaced, realised

    def solved_law(self) -> Law:
        return Law(**self.law)

    @property
    def input_rows(self) -> int:
        return sum(self.rows)

    @property
    def to_fetch(self) -> int:
        return sum(self.live)

    def as_json(self) -> dict:
        body = asdict(self)
        return {
            "plan_version": PLAN_VERSION,
            "totals": {
                "input_rows": self.input_rows,
                "to_fetch": self.to_fetch,
                "rejected": self.input_rows - self.to_fetch,
            },
            **body,
        }

    def table(self, top: int = 10) -> str:
        """What `weakly ingest --plan-only` prints: totals, rejects, the head of the label
        distribution and the weights it gets."""
        used = sum(1 for c in self.counts if c)
        lines = [
            row("rows in", self.input_rows),
            row("to fetch", self.to_fetch),
            row("rejected", self.input_rows - self.to_fetch),
        ]
        lines += count_rows(self.rejects_by_reason)
        if self.tags_dropped:
            lines.append(row("tags dropped (too long)", self.tags_dropped))
        lines.append(row("vocabulary " + self.vocab, len(self.vocabulary)))
        lines.append(row("synsets with images", used))
        head = sorted(range(len(self.counts)), key=lambda i: (-self.counts[i], i))[:top]
        for i in head:
            if self.counts[i]:
                name = f"  {self.vocabulary[i]} {self.names[i]}"[:27]
                lines.append(row(name, self.counts[i]))
        lines += law_rows(self.law)
        lines += noise_rows(self.noise)
        lines.append(row("weight buckets", len(self.buckets)))
        lines.append("plan: plan.json, index/report.png, index/rejects/ (no image fetched)")
        return "\n".join(lines)

    def save(self, store: Store) -> None:
        store.put(lay.PLAN_JSON, json.dumps(self.as_json(), indent=1).encode())

    @classmethod
    def load(cls, store: Store) -> Plan | None:
        """The saved plan, or None when there is none (or one from another plan version)."""
        if not store.exists(lay.PLAN_JSON):
            return None
        body = json.loads(store.get(lay.PLAN_JSON))
        if body.pop("plan_version", None) != PLAN_VERSION:
            return None
        body.pop("totals", None)
        return cls(**body)


def law_rows(law: dict) -> list[str]:
    """The solved law in a few printed lines."""
    if not law:
        return []
    lines = [
        row("train images", law["images"]),
        f"{'law ' + law['scheme']:<28}{'epoch ' + format(law['epoch_size'], ',.0f'):>12}",
    ]
    if law["scheme"] in REPLICATING:
        lines.append(f"{'  threshold t':<28}{law['t']:>12,.4g}")
    if law["scheme"] == "inv-sqrt":
        lines.append(row("  rare: f(s) <=", law["rare_cutoff"]))
    return lines


def manifest_bytes(files: list[str], storage_options: dict) -> int:
    """The manifests' total size in bytes (an unreadable file counts 0: it becomes one
    rejected row in round 1)."""
    import fsspec

    total = 0
    for url in files:
        try:
            fs, path = fsspec.core.url_to_fs(url, **storage_options)
            total += int(fs.size(path) or 0)
        except (OSError, ValueError):
            pass
    return total


def partition_count(total: int) -> int:
    """Key partitions for the duplicate search, from the manifests' total size in bytes."""
    return max(1, min(MAX_PARTITIONS, math.ceil(total / MANIFEST_BYTES_PER_PARTITION)))


def plan_in_driver(total: int) -> bool:
    """Whether pass 1 runs in the driver process rather than as Ray tasks: manifests of at
    most PLAN_IN_DRIVER_BYTES in all. Such a pass 1 takes well under a second, less than
    shipping the lexicon to Ray workers costs, and it can run while Ray starts; the rounds
    are the same functions in the same order, so the plan is the same (tests/
    test_plan_rounds.py). The driver then holds one manifest file's rows at a time, a few
    MiB at most. `total` is the manifests' size in bytes (`manifest_bytes`)."""
    return total <= PLAN_IN_DRIVER_BYTES


def _weight_edges(counts: np.ndarray, law: Law) -> np.ndarray:
    """Histogram edges in log10 weight that span every weight a train image can have."""
    used = np.asarray(counts)[np.asarray(counts) > 0]
    if law.scheme == "natural" or not len(used):
        floor = law.scale
    elif law.scheme in REPLICATING:
        floor = 1.0
    else:  # the most frequent tag's weight, unlifted: no image weighs less
        floor = law.scale * float(used.max()) ** -0.5
    low, high = math.log10(floor), math.log10(law.reference)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low - 0.05, high + 0.05, HIST_BINS + 1)


def _round(ray, fn, calls, desc: str, options, consume, clock) -> None:
    """One round of pass 1: `fn(*args)` for every args in `calls`, `consume(i, result)` in
    call order. With `ray` each call is a task; without, it runs here, one after another
    (a small job's pass 1, while Ray starts: the same functions, so the same plan)."""
    with maybe(clock, desc):
        if ray is None:
            for i, args in enumerate(calls):
                consume(i, fn(*args))
            return
        task = ray.remote(max_retries=3)(fn)
        refs = [task.remote(*args) for args in calls]
        fold_results(ray, refs, desc, options.progress, consume)


def _put(ray, value):
    """`value` in Ray's object store (sent once, not with every task), or as it is."""
    return value if ray is None else ray.put(value)


def run_plan(
    ray, store: Store, files: list[str], config, lexicon, options, clock: PhaseClock | None = None
) -> Plan:
    """All rounds of pass 1; the plan is saved (and report.png written) before returning.
    `ray` None runs every round in this process (small jobs, `plan_in_driver`); `clock`
    records each round's time (pipeline/phases.py)."""
    with maybe(clock, "pass 1: setup"):
        partitions = options.key_partitions or partition_count(
            manifest_bytes(files, options.storage_options)
        )
        for scratch in ("keys", "duplicates"):  # a killed pass 1 may have used other files
            store.remove_tree(f"{lay.WORK}/{scratch}")
        lex_ref = lexicon if ray is None else Shared(ray, lexicon)
    cwd = os.getcwd()
    rows = [0] * len(files)
    dropped = [0] * len(files)

    def took_rows(f: int, result: dict) -> None:
        rows[f], dropped[f] = result["rows"], result["tags_dropped"]
        for reason in result["warnings"]:
            print(f"weakly ingest: warning: {reason}")

    calls = [(store, f, url, config.columns, lex_ref, partitions) for f, url in enumerate(files)]
    _round(ray, canonical_file, calls, "pass 1: read", options, took_rows, clock)
    if sum(dropped):
        print(
            f"weakly ingest: warning: {sum(dropped):,} tags over {MAX_TAG_CHARS} characters "
            "dropped; their rows kept their other tags"
        )
    calls = [(store, k) for k in range(partitions)]
    _round(ray, find_duplicates, calls, "pass 1: duplicates", options, lambda k, n: None, clock)

    seen: Counter = Counter()
    calls = [(store, f, config.holdout) for f in range(len(files))]
    _round(ray, file_seen, calls, "pass 1: counts", options, lambda f, c: seen.update(c), clock)
    vocabulary = choose_vocabulary(seen, config.vocab, lexicon)
    marginal = {w: seen[w] for w in vocabulary if seen.get(w)} if config.label_noise > 0 else {}

    counts = np.zeros(len(vocabulary), np.int64)
    live = [0] * len(files)
    rejects: Counter = Counter()
    noise = NoiseTally()
    train = [0] * len(files)

    def took_labels(f: int, result: dict) -> None:
        counts[result["codes"]] += np.asarray(result["counts"], np.int64)
        live[f], train[f] = result["live"], result["train"]
        rejects.update(result["rejects"])
        noise.add(result["noise"])

    vocab_ref, files_ref = _put(ray, vocabulary), _put(ray, files)
    calls = [(store, f, files_ref, vocab_ref, marginal, config, cwd) for f in range(len(files))]
    _round(ray, label_file, calls, "pass 1: labels", options, took_labels, clock)

    counts_ref = _put(ray, counts)
    tally = LawTally(images=sum(train))
    if config.weighting.scheme != "natural":  # natural needs only the image count
        tally = LawTally()
        calls = [(store, f, live[f], counts_ref, config) for f in range(len(files)) if live[f]]
        _round(ray, tally_file, calls, "pass 1: law", options, lambda f, t: tally.add(t), clock)
    law = solve_law(config.weighting, counts, tally, config.holdout)
    edges = _weight_edges(counts, law)
    weighted = np.zeros(len(vocabulary), np.float64)
    hist = np.zeros(HIST_BINS, np.int64)
    buckets: set[int] = set()

    def took_weights(f: int, result: dict) -> None:
        weighted[result["codes"]] += np.asarray(result["share"], np.float64)
        hist[:] += np.asarray(result["hist"], np.int64)
        buckets.update(result["buckets"])

    calls = [  # a file with no live rows has nothing to weigh
        (store, f, live[f], counts_ref, law, edges, config) for f in range(len(files)) if live[f]
    ]
    _round(ray, weigh_file, calls, "pass 1: weights", options, took_weights, clock)
    with maybe(clock, "report.png"):
        _write_report(store, counts, weighted, hist, edges)
    plan = Plan(
        files=files,
        rows=rows,
        live=live,
        vocab=config.vocab,
        vocabulary=list(vocabulary),
        names=[lexicon.name(w) for w in vocabulary],
        counts=counts.tolist(),
        weighting=config.weighting.as_dict(),
        reference=law.reference,
        buckets=sorted(buckets),
        rejects_by_reason=dict(sorted(rejects.items())),
        partitions=partitions,
        tags_dropped=sum(dropped),
        law=law.as_dict(),
        noise=noise.report(config.label_noise),
    )
    plan.save(store)
    return plan


def _write_report(store: Store, counts, weighted, hist, edges) -> None:
    try:
        store.put(lay.REPORT_PNG, render_report(counts, weighted, hist, edges))
    except Exception as exc:  # noqa: BLE001 - a plot must never fail the job
        print(f"weakly ingest: warning: report.png not written ({exc})")
