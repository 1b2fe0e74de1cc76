"""What an ingest produces (`IngestConfig`, saved as `config.json`) and how it runs
(`RunOptions`, never part of the output's identity)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .fetch import FetchConfig
from .images import ImageConfig
from .manifest import Columns
from .output_lease import DEFAULT_LEASE_SECONDS
from .split import check_holdout
from .weights import WeightConfig


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides the output; saved as `config.json` in the output folder."""

    vocab: str = "in1k"
    weighting: WeightConfig = field(default_factory=WeightConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    columns: Columns = field(default_factory=Columns)
    shard_size: int = 1000
    chunk_rows: int = 256
    label_noise: float = 0.0
    holdout: float = 0.0  # fraction of keys written to `val` shards (pipeline/split.py)
    seed: int = 0
    eval_index: str | None = None
    radius: int | None = None  # None: the index's own radius
    lexicon_dir: str | None = None
    # hashtag,synset[,reason] CSV that beats the visual sense choice (wordnet_tools/overrides.py);
    # read once by the driver, whose lexicon the workers receive
    sense_overrides: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.shard_size <= 10_000:
            raise ValueError(f"--shard-size {self.shard_size}: use 1..10000")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"--label-noise {self.label_noise}: use 0 <= P < 1")
        if self.chunk_rows < 1:
            raise ValueError("--chunk-rows must be >= 1")
        check_holdout(self.holdout)

    def as_dict(self) -> dict:
        out = json.loads(json.dumps(asdict(self)))
        # Options left at their default are not written, so that config.json is what it was
        # before they existed and older outputs stay resumable.
        if out["sense_overrides"] is None:
            del out["sense_overrides"]
        fetch = out["fetch"]
        if fetch["per_host"] is None:
            del fetch["per_host"]
        for name in ("allow_networks", "deny_networks"):
            if not fetch[name]:
                del fetch[name]
        return out


@dataclass(frozen=True)
class RunOptions:
    """How to run, not what to produce: never part of the output's identity."""

    address: str | None = None
    num_cpus: int | None = None
    overwrite: bool = False
    progress: bool = True
    # fsspec options for --out, --eval-index and manifests (endpoint, credentials, ...); never
    # saved in the output, since they may hold secrets.
    storage_options: dict = field(default_factory=dict)
    # Reduce tasks for the duplicate-key search; None: one per ~16 MiB of manifests
    # (pipeline/plan.py MANIFEST_BYTES_PER_PARTITION). The output does not depend on it.
    key_partitions: int | None = None
    # On an object store, seconds the writer lease lasts without renewal (pipeline/
    # output_lease.py): how long a run killed on another machine blocks the next one.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
