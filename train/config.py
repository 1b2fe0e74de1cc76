"""The trainer's settings as one typed value: `TrainConfig`.

Its fields are exactly the destinations of the trainer's flags (train/cli.py), and its defaults
are the flags' defaults: the parser takes them from `DEFAULTS`, so they are written once, here.
The command line and `--config` files reach it through `TrainConfig.from_namespace`; Python code
(the demo, tests, benchmarks) builds one directly. `validated()` holds every check that does not
need the data, with the same one-line messages the command line prints.

No torch import here, so that `weakly --help` and the data side stay light.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields


def default_workers() -> int:
    """Loader processes per rank when not given: min(4, cores)."""
    return min(4, os.cpu_count() or 1)


# Values a field may take, shared with the parser's `choices`.
CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "schedule": ("cosine", "step"),
    "loss": ("softmax", "bce"),
    "sampling": ("weighted", "natural"),
    "decode": ("auto", "cpu", "gpu"),
}

# The smallest value of each numeric field that makes sense (None, where allowed, is not checked).
MINIMUM: dict[str, int] = {
    "steps": 1,
    "samples": 1,
    "epochs": 1,
    "shuffle_buffer": 1,
    "open_shards": 1,
    "batch_size": 1,
    "workers": 0,
    "log_every": 1,
    "ckpt_every": 1,
    "keep_last": 0,
    "stop_after_steps": 1,
    "image_size": 8,
    "eval_every": 0,
    "eval_min_images": 1,
    "eval_max_samples": 1,
}
# The largest value that makes sense: a crop side of 200000 would ask for 120 GB per image.
MAXIMUM: dict[str, int] = {"image_size": 4096}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `data`, `model`, `out` and exactly one of `steps`/`samples`/`epochs`
    are required (the three are one mutually exclusive group: a command-line member replaces a
    `--config` file's, and two given in one place are a one-line error);
    they default to None only so that a config can be assembled from several sources."""

    data: str | None = None
    split: str = "train"
    model: str | None = None
    out: str | None = None
    steps: int | None = None
    samples: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    device: str = "auto"
    resume: str = "none"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "cosine"
    halve_every: int = 0
    grad_clip: float = 0.0
    ema: float = 0.0
    skip_nonfinite: bool = False
    loss: str = "softmax"
    sampling: str = "weighted"
    shuffle_buffer: int = 1000
    open_shards: int = 16
    image_size: int = 224
    workers: int = field(default_factory=default_workers)
    decode: str = "auto"
    draft: bool = True
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    log_every: int = 10
    ckpt_every: int = 1000
    keep_last: int = 3
    stop_after_steps: int | None = None
    verify_shards: bool = False
    tensorboard: bool = False
    val_shards: str | None = None
    val_split: str = "val"
    eval_every: int = 0
    eval_min_images: int = 1
    eval_max_samples: int | None = None
    eval: bool = True
    init: str | None = None
    reset_head: bool = False
    seed: int = 0
    record_keys: bool = False

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> TrainConfig:
        """The fields of a parsed command line; other attributes (`config`, `func`,
        `command`) are ignored."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def validated(self) -> TrainConfig:
        """This config, if the run it describes is fully specified; else a one-line
        ValueError naming the flag."""
        for name in ("data", "model", "out"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required (on the command line or in --config)")
        given = [f"--{n}" for n in ("steps", "samples", "epochs") if getattr(self, n) is not None]
        if not given:
            raise ValueError("give --steps, --samples or --epochs (how long to train)")
        if len(given) > 1:
            raise ValueError(f"give one of --steps, --samples, --epochs, not {' and '.join(given)}")
        if self.reset_head and not self.init:
            raise ValueError("--reset-head needs --init CKPT")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"{_flag(name)} must be one of {', '.join(allowed)}, not {value!r}"
                )
        for name, low in MINIMUM.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{_flag(name)} must be at least {low}, not {value}")
        for name, high in MAXIMUM.items():
            value = getattr(self, name)
            if value is not None and value > high:
                raise ValueError(f"{_flag(name)} must be at most {high}, not {value}")
        return self

    def to_dict(self) -> dict:
        """Plain JSON values (paths as strings), for config.json and checkpoints."""
        return {
            k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
            for k, v in asdict(self).items()
        }


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


DEFAULTS = TrainConfig()
