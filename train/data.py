"""The streaming training loader: shards -> interleaved epoch stream -> shuffle -> decode -> batches.

Each rank has `n_streams = max(1, workers)` logical streams; logical stream `j` of rank `r` is
sampler slot `r * n_streams + j` of `world_size * n_streams` (train/sampler.py: every slot emits
an equal share of each epoch, reading only what it emits). Workers build whole batches, and
the DataLoader hands them out round-robin, so batch `t` of a rank is the next batch of logical
stream `t % n_streams`. Every batch carries its stream's state; the loader keeps the latest per
stream, which is exactly what a checkpoint needs to continue with the batches an uninterrupted
run would have seen. On resume at step `k`, physical worker `w` runs logical stream
`(w + k) % n_streams`, since the DataLoader always starts at worker 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .loader_state import StreamCounts, check_loader_state
from .prefetch import Prefetched
from .sample_rng import SampleRng, fold
from .sampler import Plan, SampleStream, StreamError, StreamState
from .shards import DEFAULT_MAX_MEMBER_BYTES, Dataset, DataStop, Sample, Skip
from .transforms import (
    DECODE_ERRORS,
    crop_params,
    decode_crop_cpu,
    decode_crop_gpu,
    header_size,
    normalize,
)

_AUG = 4


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int
    image_size: int = 224
    seed: int = 0
    sampling: str = "weighted"
    shuffle_buffer: int = 1000
    open_shards: int = 16
    workers: int = 0
    rank: int = 0
    world_size: int = 1
    decode: str = "cpu"
    draft: bool = True
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    @property
    def n_streams(self) -> int:
        return max(1, self.workers)


def make_plan(
    dataset: Dataset, seed: int, sampling: str, shuffle_buffer: int, open_shards: int = 16
) -> Plan:
    shards = dataset.shards
    return Plan(
        weight_sums=tuple(float(w) for w in shards.weight_sum),
        sizes=tuple(int(n) for n in shards.n),
        weight_maxes=None if shards.weight_max is None else tuple(map(float, shards.weight_max)),
        seed=seed,
        mode=sampling,
        open_shards=open_shards,
        buffer_size=shuffle_buffer,
    )


class ShardSource:
    """The sampler's view of a dataset: index weights per shard, and the Samples (or Skips) at
    chosen positions, reading only those members. On an object store each visit is read ahead
    in its own thread and the next `prefetch` visits are opened early."""

    def __init__(self, dataset: Dataset, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        self.dataset, self.max_member_bytes = dataset, max_member_bytes
        self.prefetch = 0 if dataset.store.is_local else 8

    def weights(self, shard: int) -> np.ndarray:
        return self.dataset.weights(shard)

    def read(self, shard: int, positions: Sequence[int]) -> Iterator[Sample | Skip]:
        def make() -> Iterator[Sample | Skip]:
            return self.dataset.read_positions(shard, positions, self.max_member_bytes)

        return make() if self.prefetch == 0 else Prefetched(make)


class KeySource:
    """The same positions as keys, from the samples index alone (no tar is opened)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def weights(self, shard: int) -> np.ndarray:
        return self.dataset.weights(shard)

    def read(self, shard: int, positions: Sequence[int]) -> Iterator[str]:
        rows = self.dataset.index_rows(shard)
        return iter([rows[i].key for i in positions])


def pad_labels(labels: list[tuple[int, ...]]) -> torch.Tensor:
    """[B, Kmax] class indices, -1 where an image has fewer labels (one tensor built from
    padded rows: a tensor per row costs more than the rows)."""
    kmax = max((len(x) for x in labels), default=1)
    rows = [(*lab, *(-1,) * (kmax - len(lab))) for lab in labels]
    return torch.tensor(rows, dtype=torch.long).reshape(len(labels), kmax)


def _state_to_ckpt(state: StreamState, counts: StreamCounts) -> dict:
    d = state.to_dict()
    d["buffer"] = torch.as_tensor(d["buffer"], dtype=torch.long).reshape(-1, 4)
    d["open"] = torch.as_tensor(d["open"], dtype=torch.long).reshape(-1, 2)
    d.update(counts.to_dict())
    return d


def unusable_limit(num_samples: int) -> int:
    """Consecutive unusable emissions (skipped or undecodable) after which a stream stops.

    With a fraction p of a split's emissions usable, a run of L unusable ones has probability
    (1 - p)^L; at L = 8 N even a single usable sample among N is drawn with probability
    1 - e^-8. So the stop fires when nothing usable is left, not on a bad stretch."""
    return max(10_000, 8 * num_samples)


class StreamDataset(IterableDataset):
    """One rank's logical streams; each DataLoader worker runs one of them."""

    def __init__(
        self,
        dataset: Dataset,
        cfg: LoaderConfig,
        states: list[dict | None] | None = None,
        rotation: int = 0,
    ) -> None:
        self.dataset, self.cfg = dataset, cfg
        self.states = states or [None] * cfg.n_streams
        self.rotation = rotation
        self.plan = make_plan(dataset, cfg.seed, cfg.sampling, cfg.shuffle_buffer, cfg.open_shards)

    def __iter__(self) -> Iterator[dict]:
        """Batches of this worker's logical stream; a `{"stop": line}` item when the data
        cannot go on (turned into DataStop by TrainLoader, also across worker processes,
        where an exception would arrive as a multi-line traceback)."""
        cfg = self.cfg
        info = get_worker_info()
        physical = info.id if info is not None else 0
        if info is not None and info.num_workers != cfg.n_streams:
            raise RuntimeError("DataLoader workers must equal the loader's stream count")
        logical = (physical + self.rotation) % cfg.n_streams
        try:
            yield from self._batches(logical)
        except DataStop as exc:
            yield {"stop": str(exc), "stream": logical}
        except StreamError as exc:
            where = f"{self.dataset.url}: split {self.dataset.split!r}"
            yield {"stop": f"{where}: {exc}", "stream": logical}

    def _batches(self, logical: int) -> Iterator[dict]:
        cfg = self.cfg
        slot = cfg.rank * cfg.n_streams + logical
        saved = self.states[logical]
        counts = StreamCounts.from_dict(saved)
        limit = unusable_limit(self.dataset.num_samples)
        stream = SampleStream(
            self.plan,
            slot,
            cfg.world_size * cfg.n_streams,
            ShardSource(self.dataset, cfg.max_member_bytes),
            StreamState.from_dict(saved) if saved else None,
        )
        aug = fold(cfg.seed, _AUG, slot)  # each sample's draws: fold(*ref) on top of this
        batch_size, size, on_cpu = cfg.batch_size, cfg.image_size, cfg.decode == "cpu"
        keys, labels, params, jpgs = [], [], [], []
        images = _new_images(batch_size, size) if on_cpu else None
        for ref, sample in stream:
            if isinstance(sample, Skip):
                counts.skip(sample, self.dataset.url)
            else:
                rng = SampleRng(fold(*ref, start=aug))
                try:
                    if on_cpu:
                        decode_crop_cpu(sample.jpg, rng, size, cfg.draft, images[len(keys)])
                    else:
                        params.append(crop_params(*header_size(sample.jpg), rng))
                        jpgs.append(torch.frombuffer(bytearray(sample.jpg), dtype=torch.uint8))
                except DECODE_ERRORS:
                    counts.undecodable()
                else:
                    counts.usable()
            if counts.streak >= limit:
                raise DataStop(
                    f"{self.dataset.url}: split {self.dataset.split!r} has nothing usable left: "
                    f"the last {counts.streak} samples drawn were all skipped or undecodable "
                    f"({counts.describe()})"
                )
            if counts.streak:
                continue
            keys.append(sample.key)
            labels.append(sample.labels)
            if len(keys) < batch_size:
                continue
            batch = {
                "keys": keys,
                "targets": pad_labels(labels),
                "stream": logical,
                "state": _state_to_ckpt(stream.state(), counts),
            }
            if on_cpu:
                batch["images"] = torch.from_numpy(images)  # NHWC uint8, filled in place
                images = _new_images(batch_size, size)
            else:
                batch["jpgs"] = jpgs
                batch["params"] = torch.as_tensor(params, dtype=torch.long)
            yield batch
            keys, labels, params, jpgs = [], [], [], []


def _new_images(batch_size: int, size: int) -> np.ndarray:
    """A batch's image memory, each decode writing its slot (no per-image array, no stack)."""
    return np.empty((batch_size, size, size, 3), dtype=np.uint8)


def _as_is(batch: dict) -> dict:
    """The DataLoader's collate for whole batches: they are tensors already, and its default
    walks every item of every list and dict to convert it."""
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class TrainLoader:
    """Endless batches for one rank, with a state that resumes them exactly."""

    def __init__(self, dataset: Dataset, cfg: LoaderConfig, pin_memory: bool = False) -> None:
        if cfg.decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu', not {cfg.decode!r}")
        self.dataset, self.cfg, self.pin_memory = dataset, cfg, pin_memory
        self.step = 0
        self.states: list[dict | None] = [None] * cfg.n_streams

    def state_dict(self) -> dict:
        cfg = self.cfg
        return {
            "step": self.step,
            "n_streams": cfg.n_streams,
            "rank": cfg.rank,
            "world_size": cfg.world_size,
            "seed": cfg.seed,
            "sampling": cfg.sampling,
            "batch_size": cfg.batch_size,
            "shuffle_buffer": cfg.shuffle_buffer,
            "open_shards": cfg.open_shards,
            "streams": [s if s is not None else {} for s in self.states],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's loader state; one ValueError line when it is not one
        this run can continue (another configuration, or a damaged state)."""
        cfg = self.cfg
        check_loader_state(state, cfg.shuffle_buffer)
        names = ("n_streams", "world_size", "rank", "seed", "sampling", "batch_size")
        for name in (*names, "open_shards"):
            have = getattr(cfg, name)
            if state.get(name, have) != have:
                raise ValueError(
                    f"checkpoint loader state has {name}={state[name]!r} but this run has "
                    f"{have!r}; resume with the same value to continue the same sample order"
                )
        self.step = int(state["step"])
        self.states = [s if s else None for s in state["streams"]]

    @property
    def corrupt(self) -> int:
        """Undecodable images drawn so far, over this rank's streams."""
        return sum(StreamCounts.from_dict(s).corrupt for s in self.states if s)

    @property
    def skipped(self) -> dict[str, int]:
        """Samples drawn but skipped (index or record problems), by reason."""
        out: dict[str, int] = {}
        for s in self.states:
            for reason, n in StreamCounts.from_dict(s).skipped.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))

    def __iter__(self) -> Iterator[dict]:
        cfg = self.cfg
        ds = StreamDataset(self.dataset, cfg, list(self.states), self.step % cfg.n_streams)
        loader = DataLoader(
            ds,
            batch_size=None,
            num_workers=cfg.workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_worker_init if cfg.workers else None,
            prefetch_factor=4 if cfg.workers else None,
            persistent_workers=False,
            collate_fn=_as_is,
        )
        for batch in loader:
            if "stop" in batch:
                raise DataStop(batch["stop"])
            self.states[batch["stream"]] = batch.pop("state")
            self.step += 1
            yield batch


def prepare_batch(
    batch: dict, device: torch.device, image_size: int, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Normalised float images and targets on `device`, plus how many GPU decodes failed."""
    targets = batch["targets"]
    if "images" in batch:
        images = batch["images"].to(device, non_blocking=True).permute(0, 3, 1, 2)
        failed = 0
    else:
        images, kept = decode_crop_gpu(batch["jpgs"], batch["params"], image_size, device)
        failed = len(batch["jpgs"]) - len(kept)
        if failed:
            targets = targets[kept]
    return normalize(images, channels_last), targets.to(device, non_blocking=True), failed


def _key_streams(
    dataset: Dataset,
    seed: int,
    rank: int,
    world_size: int,
    workers: int,
    sampling: str,
    shuffle_buffer: int,
    open_shards: int,
) -> list[SampleStream]:
    n = max(1, workers)
    plan = make_plan(dataset, seed, sampling, shuffle_buffer, open_shards)
    source = KeySource(dataset)
    return [SampleStream(plan, rank * n + j, world_size * n, source) for j in range(n)]


def iter_sample_keys(
    dataset_dir: str,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    *,
    batch_size: int = 1,
    workers: int = 0,
    sampling: str = "weighted",
    shuffle_buffer: int = 1000,
    open_shards: int = 16,
    split: str = "train",
) -> Iterator[str]:
    """The keys one rank's loader yields, in order, without reading a byte of any tar.

    Uses the samples index in place of the tars. Agrees key for key with `TrainLoader`
    built with the same arguments, except that the loader also drops samples it cannot use: a
    JPEG that does not decode, a record missing from its tar or disagreeing with the index
    (this function cannot know those without reading the tars).
    """
    streams = _key_streams(
        Dataset(dataset_dir, split),
        seed, rank, world_size, workers, sampling, shuffle_buffer, open_shards,
    )  # fmt: skip
    its = [iter(s) for s in streams]
    for step in itertools.count():
        for _, key in itertools.islice(its[step % len(its)], batch_size):
            yield key


def epoch_keys(
    dataset_dir: str,
    epoch: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    *,
    workers: int = 0,
    sampling: str = "weighted",
    open_shards: int = 16,
    split: str = "train",
) -> list[list[str]]:
    """The keys each logical stream of one rank emits in `epoch`, in emission order (before
    the shuffle buffer), from the samples index alone. Over every rank and stream an epoch
    holds each sample floor(w) or ceil(w) times (w its index weight; once under `natural`),
    and every stream of the world holds the same number of keys, +-1."""
    streams = _key_streams(
        Dataset(dataset_dir, split), seed, rank, world_size, workers, sampling, 1, open_shards
    )
    return [[key for _, key in s.epoch_emissions(epoch)] for s in streams]


__all__ = [
    "LoaderConfig",
    "StreamDataset",
    "TrainLoader",
    "epoch_keys",
    "iter_sample_keys",
    "pad_labels",
    "prepare_batch",
]
