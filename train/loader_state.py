"""The loader's resumable counters, and the check a checkpoint's loader state must pass.

A checkpoint carries, per logical stream, the sampler's cursor and buffer (train/sampler.py)
plus what the stream has thrown away: undecodable images, skipped samples by reason, and the
current run of unusable draws. Keeping the run in the checkpoint makes "nothing usable left"
fire at the same draw after a resume as in an unbroken run.

A checkpoint is a file from disk: its loader state is checked field by field before any worker
starts, so a damaged one is one line naming what is wrong, not a KeyError in a worker process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from .sample_checks import Skip

_MAX_COUNTER = 1 << 62  # beyond any real run; keeps numpy seeds and tensors in range
_SCALARS = ("epoch", "t", "next_piece", "out")


@dataclass
class StreamCounts:
    """What one stream dropped so far. `streak` counts unusable draws since the last usable."""

    corrupt: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    streak: int = 0
    _warned: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def from_dict(cls, saved: dict | None) -> StreamCounts:
        """From a saved stream state (checkpoints before these counters have `corrupt` only)."""
        saved = saved or {}
        skipped = {str(k): int(v) for k, v in dict(saved.get("skipped") or {}).items()}
        return cls(int(saved.get("corrupt", 0)), skipped, int(saved.get("streak", 0)))

    def to_dict(self) -> dict:
        return {"corrupt": self.corrupt, "skipped": dict(self.skipped), "streak": self.streak}

    def skip(self, item: Skip, where: str) -> None:
        """Count a skipped draw; the first of each reason in this process is said aloud."""
        self.skipped[item.reason] = self.skipped.get(item.reason, 0) + 1
        self.streak += 1
        if item.reason not in self._warned:
            self._warned.add(item.reason)
            print(
                f"train: warning: {where}: skipping sample {item.key} ({item.reason}: "
                f"{item.detail}); further skips are counted in metrics.jsonl",
                file=sys.stderr,
                flush=True,
            )

    def undecodable(self) -> None:
        self.corrupt += 1
        self.streak += 1

    def usable(self) -> None:
        self.streak = 0

    def describe(self) -> str:
        parts = [f"{self.corrupt} undecodable"] + [f"{n} {r}" for r, n in self.skipped.items()]
        return ", ".join(parts)


def _counter(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNTER:
        raise ValueError(f"loader state {what} is {str(value)[:40]!r}, not a counter")
    return value


def _rows(value, width: int, what: str, names: str) -> int:
    """How many rows of `width` counters a saved table holds, after checking them."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dim() != 2:
            raise ValueError(f"loader state {what} is not an integer table")
        rows = value.tolist()
    elif isinstance(value, list):
        rows = value
    else:
        raise ValueError(f"loader state {what} is a {type(value).__name__}")
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise ValueError(f"loader state {what} holds {str(row)[:40]!r}, not ({names})")
        for x in row:
            _counter(x, what)
    return len(rows)


def check_stream(saved, buffer_size: int, where: str) -> None:
    """One stream's saved state: empty (never started) or a cursor, a buffer and counters."""
    if saved in ({}, None):
        return
    if not isinstance(saved, dict):
        raise ValueError(f"loader state {where} is a {type(saved).__name__}, not a mapping")
    for name in _SCALARS:
        if name not in saved:
            raise ValueError(f"loader state {where} lacks {name!r}")
        _counter(saved[name], f"{where}.{name}")
    names = "epoch, t, shard, position"
    if _rows(saved.get("buffer", []), 4, f"{where}.buffer", names) > buffer_size:
        raise ValueError(f"loader state {where}.buffer holds more than {buffer_size} samples")
    _rows(saved.get("open", []), 2, f"{where}.open", "piece, done")
    _counter(saved.get("corrupt", 0), f"{where}.corrupt")
    _counter(saved.get("streak", 0), f"{where}.streak")
    skipped = saved.get("skipped", {})
    if not isinstance(skipped, dict):
        raise ValueError(f"loader state {where}.skipped is not a mapping")
    for reason, n in skipped.items():
        _counter(n, f"{where}.skipped[{str(reason)[:20]!r}]")


def check_loader_state(state, buffer_size: int) -> None:
    """A whole rank's loader state, as `TrainLoader.state_dict` writes it; ValueError (one
    line) on the first thing that is not."""
    if not isinstance(state, dict):
        raise ValueError(f"loader state is a {type(state).__name__}, not a mapping")
    needed = ("step", "n_streams", "rank", "world_size", "seed", "sampling", "batch_size")
    missing = [k for k in (*needed, "streams") if k not in state]
    if missing:
        raise ValueError(f"loader state lacks {', '.join(missing)}")
    _counter(state["step"], "step")
    streams = state["streams"]
    if not isinstance(streams, list) or len(streams) != state["n_streams"]:
        raise ValueError(f"loader state holds {str(streams)[:40]!r}, not one state per stream")
    saved_size = state.get("shuffle_buffer", buffer_size)
    limit = max(buffer_size, saved_size if isinstance(saved_size, int) else 0)
    for j, saved in enumerate(streams):
        check_stream(saved, limit, f"streams[{j}]")
