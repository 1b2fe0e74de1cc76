"""What a trainer feels of the sample order: batch mixing, wasted reads, epoch exactness, and
loader throughput from an S3-compatible server against the same dataset on local disk.

    python benchmarks/batch_mixing.py [--data DIR] [--samples 17000] [--batch 256]
    python benchmarks/batch_mixing.py --s3 [--s3-samples 1500]

Mixing: batches of the loader's order (`iter_sample_keys`, the index alone) against the same
number of independent draws with probability proportional to the weights (the papers'
shuffled replicated list), both in this process: distinct shards a batch draws on, and the share
of the batch carrying its most common label. Goals (issue 16): shards >= 0.8x independent,
label share <= 1.2x independent.

Wasted reads: the real loader (`TrainLoader`, CPU decode) over a dataset whose reads are
counted under the tar reader. A sample read is wasted when the visit that read it does not emit
it; bytes read besides the emitted samples' members (the tar headers of skipped members) are
reported too. Goal: <= 10%. Epoch exactness: `epoch_keys` over every stream of the world
against floor/ceil of each weight, for a few epochs.

S3: a fixture of 256-341 px JPEGs uploaded to moto's standalone server (tests/s3_server.py),
read by the loader from s3:// and from the local folder, one after the other in this process,
under `natural` sampling (every member read, as under the Mahajan laws, where every weight is
>= 1) and `weighted` (the fixture's inv-sqrt weights: an epoch of a few percent of the images,
so a visit reads a few scattered members). Goal: s3 >= 0.9x local. Also printed: CPU per image
of the loader process and the server together (a figure a shared box does not move much), and
what the ranged reads fetched against the bytes of the samples they were for (0 workers).

Without --data a fixture stands in for the 17k-image synth set: Zipf-popular labels, the
inv-sqrt law with rare upsampling, weight buckets cut into shards of --shard-size (1000, the
ingest default), tiny JPEGs (nothing here times decoding); the wasted-read part builds a second one of
--read-samples photo-sized (256-341 px) JPEGs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from train.data import LoaderConfig, TrainLoader, epoch_keys, iter_sample_keys  # noqa: E402
from train.shards import Dataset  # noqa: E402
from weakly.fixtures import build_fixture  # noqa: E402
from weakly_base.tar_reader import iter_members  # noqa: E402


class CountingFile(io.RawIOBase):
    """A read-only file that adds every byte read through it to `counter[0]`."""

    def __init__(self, f, counter: list[int]) -> None:
        self.f, self.counter = f, counter

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.counter[0] += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.f.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()
        super().close()


class CountingDataset(Dataset):
    """A Dataset that counts the bytes its tars give the tar reader, and the samples each
    visit reads (its distinct wanted positions)."""

    def __init__(self, url: str, split: str = "train") -> None:
        super().__init__(url, split)
        self.bytes_read = [0]
        self.samples_read = 0
        self.footprint_read = 0  # headers + padded data of the samples read
        self._footprints: dict[int, dict[str, int]] = {}

    def open_shard(self, file: str):
        return CountingFile(super().open_shard(file), self.bytes_read)

    def footprints(self, index: int) -> dict[str, int]:
        if index not in self._footprints:
            sizes: Counter = Counter()
            with self.fs.open(f"{self.root}/{self.shards.files[index]}", "rb") as f:
                for m in iter_members(f, lambda name: False):  # headers only
                    sizes[m.name.rsplit(".", 1)[0]] += 512 + -(-m.size // 512) * 512
            self._footprints[index] = dict(sizes)
        return self._footprints[index]

    def read_positions(self, index, positions, max_member_bytes=32 << 20):
        """Counted as the samples are handed out: a visit still open has read only its
        front."""
        rows = self.index_rows(index)
        sizes = self.footprints(index)
        last = -1
        items = super().read_positions(index, positions, max_member_bytes)
        for pos, item in zip(positions, items, strict=True):
            if pos != last:
                self.samples_read += 1
                self.footprint_read += sizes.get(rows[pos].key, 0)
                last = pos
            yield item


def key_table(ds: Dataset) -> dict[str, tuple[int, tuple[int, ...], float]]:
    out = {}
    for s in range(len(ds.shards.files)):
        for row, w in zip(ds.index_rows(s), ds.weights(s), strict=True):
            out[row.key] = (s, row.labels or (), float(w))
    return out


def batch_stats(batches: list[list[str]], table: dict) -> tuple[float, float]:
    """Mean distinct shards per batch, mean share of the batch with its most common label."""
    shards, shares = [], []
    for batch in batches:
        shards.append(len({table[k][0] for k in batch}))
        labels = Counter(lab for k in batch for lab in table[k][1])
        shares.append(max(labels.values()) / len(batch))
    return float(np.mean(shards)), float(np.mean(shares))


def mixing(args, data: str) -> None:
    ds = Dataset(data)
    table = key_table(ds)
    keys = list(table)
    p = np.asarray([table[k][2] for k in keys])
    rng = np.random.default_rng(0)
    independent = [
        [keys[i] for i in rng.choice(len(keys), size=args.batch, p=p / p.sum())]
        for _ in range(args.batches)
    ]
    stream = iter_sample_keys(
        data, seed=1, batch_size=args.batch, workers=args.workers,
        shuffle_buffer=args.buffer, open_shards=args.open_shards,
    )  # fmt: skip
    skip = args.batch * max(1, args.workers) * 2  # past the buffer's fill
    ordered = list(itertools.islice(stream, skip, skip + args.batch * args.batches))
    ours = [ordered[i : i + args.batch] for i in range(0, len(ordered), args.batch)]
    (s_ind, l_ind), (s_our, l_our) = batch_stats(independent, table), batch_stats(ours, table)
    print(
        f"dataset {data}: {len(keys)} samples, {len(ds.shards.files)} shards, epoch of "
        f"{p.sum():.0f} samples; batch {args.batch}, {args.workers} workers, "
        f"--open-shards {args.open_shards}, --shuffle-buffer {args.buffer}, {args.batches} batches"
    )
    print(
        f"shards per batch        {s_our:6.2f} vs independent draws {s_ind:6.2f}: "
        f"{s_our / s_ind:.2f}x (goal >= 0.8)"
    )
    print(
        f"top label share         {l_our:6.3f} vs independent draws {l_ind:6.3f}: "
        f"{l_our / l_ind:.2f}x (goal <= 1.2)"
    )


def wasted_reads(args, data: str) -> None:
    ds = CountingDataset(data)
    cfg = LoaderConfig(
        batch_size=args.batch, image_size=16, workers=0, shuffle_buffer=args.buffer,
        open_shards=args.open_shards, seed=1,
    )  # fmt: skip
    loader = TrainLoader(ds, cfg)
    batches = list(itertools.islice(loader, args.read_batches))
    # what sits in the shuffle buffer was read and emitted too
    emitted = sum(len(b["keys"]) for b in batches) + args.buffer
    useful = ds.footprint_read
    wasted = max(0, ds.samples_read - emitted)
    print(
        f"loader over {data} ({len(ds.shards.files)} shards): {ds.samples_read} samples read "
        f"for {emitted} emissions in {args.read_batches} batches: wasted "
        f"{wasted / max(ds.samples_read, 1):.1%} of samples read (goal <= 10%)"
    )
    print(
        f"bytes through the tar reader {ds.bytes_read[0]:,}: {1 - useful / ds.bytes_read[0]:.1%} "
        "besides the emitted samples' members (headers of skipped members, end of archive)"
    )


def exactness(args, data: str) -> None:
    table = key_table(Dataset(data))
    n_ok = n_all = 0
    sizes = []
    for epoch in range(args.epochs):
        counts: Counter = Counter()
        for rank in range(args.world):
            for keys in epoch_keys(
                data, epoch, seed=1, rank=rank, world_size=args.world,
                workers=args.workers, open_shards=args.open_shards,
            ):  # fmt: skip
                counts.update(keys)
                sizes.append(len(keys))
        for key, (_, _, w) in table.items():
            n_all += 1
            n_ok += int(np.floor(w + 1e-9) <= counts[key] <= np.ceil(w - 1e-9))
    print(
        f"epoch exactness: {n_ok}/{n_all} (sample, epoch) counts are floor(w) or ceil(w) over "
        f"{args.epochs} epochs x {args.world} ranks x {max(1, args.workers)} streams; stream "
        f"shares {min(sizes)}..{max(sizes)} samples"
    )


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loader_rate(
    url: str, batches: int, workers: int, open_shards: int, sampling: str, server_pid: int
) -> tuple[float, float, Dataset]:
    """img/s, CPU ms per image (this process and the S3 server together: robust to a shared
    box where img/s is not), and the Dataset (its `fetch_stats` when workers == 0)."""
    ds = Dataset(url)
    cfg = LoaderConfig(
        batch_size=32, image_size=224, workers=workers, shuffle_buffer=64,
        open_shards=open_shards, seed=1, sampling=sampling,
    )  # fmt: skip
    it = iter(TrainLoader(ds, cfg))
    next(it)
    cpu = time.process_time() + process_cpu(server_pid)
    t = time.perf_counter()
    n = sum(len(b["keys"]) for b in itertools.islice(it, batches))
    wall = time.perf_counter() - t
    cpu = time.process_time() + process_cpu(server_pid) - cpu
    return n / wall, 1000 * cpu / n, ds


def s3_throughput(args) -> None:
    import torch
    from s3_server import S3Server

    from weakly_base.storage import Store

    # As in a loader worker (train/data.py): with the default of one thread per core, torch's
    # OpenMP threads contend with the S3 server that shares this machine's cores.
    torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        local = build_fixture(
            Path(tmp) / "ds", samples=args.s3_samples, max_shard=200, min_side=256,
            max_side=341, classes=50, seed=0,
        )  # fmt: skip
        with S3Server(Path(tmp) / "moto") as server, server.environ():
            url = server.bucket("bench") + "/ds"
            store = Store.at(url)
            for path in sorted(local.rglob("*")):
                if path.is_file():
                    store.put(str(path.relative_to(local)), path.read_bytes())
            rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
            fetched: dict[str, tuple[int, int, int]] = {}
            for _ in range(args.repeats):
                for sampling in ("natural", "weighted"):
                    for name, where in (("local", str(local)), ("s3", url)):
                        rate, cpu, ds = loader_rate(
                            where, args.s3_batches, args.workers, args.open_shards, sampling,
                            server.proc.pid,
                        )  # fmt: skip
                        rows.setdefault((sampling, name), []).append((rate, cpu))
                        f = ds.fetch_stats
                        fetched[sampling] = (f.requests, f.fetched, f.wanted)
    for sampling in ("natural", "weighted"):
        (local_rate, local_cpu), (s3_rate, s3_cpu) = (
            (max(r for r, _ in rows[(sampling, n)]), min(c for _, c in rows[(sampling, n)]))
            for n in ("local", "s3")
        )
        print(
            f"loader --sampling {sampling}, {args.s3_samples} JPEGs of 256-341 px, crop 224, "
            f"{args.workers} workers, {args.torch_threads} torch threads, best of "
            f"{args.repeats}: local {local_rate:.1f} img/s, s3 (moto) {s3_rate:.1f} img/s: "
            f"{s3_rate / local_rate:.2f}x (goal >= 0.9)"
            + (
                f"; CPU per image (loader + server) local {local_cpu:.2f} ms, s3 {s3_cpu:.2f} ms"
                if args.workers == 0  # workers' CPU is not this process's
                else ""
            )
        )
        requests, got, wanted = fetched[sampling]
        if args.workers == 0 and requests:
            print(
                f"  s3 ranged reads (last run): {requests} requests, {got / 2**20:.1f} MiB "
                f"fetched for {wanted / 2**20:.1f} MiB of the samples read "
                f"({got / max(wanted, 1):.2f}x)"
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="an existing dataset (else a fixture is built)")
    ap.add_argument("--samples", type=int, default=17_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--read-batches", type=int, default=20)
    ap.add_argument("--read-samples", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--open-shards", type=int, default=16)
    ap.add_argument("--buffer", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--s3", action="store_true", help="only the s3 vs local throughput")
    ap.add_argument("--s3-samples", type=int, default=1500)
    ap.add_argument("--s3-batches", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--torch-threads", type=int, default=1, help="--s3 runs: torch threads")
    args = ap.parse_args(argv)
    if args.s3:
        s3_throughput(args)
        return
    with tempfile.TemporaryDirectory() as tmp:

        def fixture(name: str, samples: int, sides: tuple[int, int]) -> str:
            return str(
                build_fixture(
                    Path(tmp) / name,
                    samples=samples,
                    classes=args.classes,
                    max_shard=args.shard_size,
                    min_side=sides[0],
                    max_side=sides[1],
                    seed=0,
                )  # fmt: skip
            )

        data = args.data or fixture("ds", args.samples, (8, 12))
        mixing(args, data)
        exactness(args, data)
        if not args.data:  # photo-sized JPEGs, so that bytes mean what they do in training
            data = fixture("photos", args.read_samples, (256, 341))
        wasted_reads(args, data)


if __name__ == "__main__":
    main()
