"""Sample order: a pure function of (seed, stream slot, number of slots, epoch, position).

A slot is one (rank, loader worker) pair. Each epoch gives every slot an equal share of the
epoch's shard visits (train/epoch_plan.py), as a list of pieces. The slot keeps up to
`open_shards` pieces open at once and interleaves them: emission `t` of the epoch comes from an
open piece chosen uniformly, by a generator seeded by (seed, slot, epoch, t). (Uniform rather
than by what each piece has left: a batch then spreads over all open pieces, small ones
included, which measured a few more distinct shards per batch.) A piece is read front to back,
and only the samples it emits are read at all; when one runs out the next opens. So a batch
draws on many shards at once, while every shard is still read sequentially, and the epoch's
counts do not depend on the picks at all.

The emissions then pass through a shuffle buffer whose pick for output `o` is a function of
(seed, slot, o). The state that resumes a slot exactly is the epoch, the emission count `t`, the
next piece, the open pieces with how far each got, the output count and references
(epoch, t, shard, position) to what sits in the buffer -- never sample bytes.

Streams never end: after an epoch the slot goes on with its share of the next, so every rank can
draw exactly as many batches as asked and no rank runs dry before another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .epoch_plan import EpochPlan, Piece, Plan

__all__ = ["EpochPlan", "Piece", "Plan", "SampleStream", "Source", "StreamError", "StreamState"]

_PICK, _BUF = 21, 22
_BLOCK = 4096


class StreamError(ValueError):
    """The stream cannot go on: no epoch gives this slot anything, or a saved state does not
    fit the data. The message is one line."""


class Source(Protocol):
    """Where a stream's samples come from: a shard's index weights (no tar bytes), and the
    payloads at given positions of a shard (one per position, in the order given)."""

    def weights(self, shard: int) -> np.ndarray: ...

    def read(self, shard: int, positions: Sequence[int]) -> Iterator[object]: ...


def empty_epoch_limit(plan: Plan, n_slots: int) -> int:
    """Consecutive epochs that give a slot nothing after which its stream stops. An epoch
    holds about `expected_epoch_size` samples, so a slot is empty in about
    max(0, 1 - size / n_slots) of them; 256 / that share in a row do not happen by chance."""
    size = plan.expected_epoch_size
    if size <= 0:
        return 1
    return int(min(1e6, 256 + 20 * n_slots / size))


@dataclass
class StreamState:
    """Where a slot's stream stands; enough to continue it exactly (see the module docstring).
    `open` holds (piece index, emissions done) in the order the pieces were opened."""

    epoch: int = 0
    t: int = 0
    next_piece: int = 0
    open: list[tuple[int, int]] = field(default_factory=list)
    out: int = 0
    buffer: list[tuple[int, int, int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "t": self.t,
            "next_piece": self.next_piece,
            "open": [list(r) for r in self.open],
            "out": self.out,
            "buffer": [list(r) for r in self.buffer],
        }

    @classmethod
    def from_dict(cls, d: dict) -> StreamState:
        def rows(value, width: int) -> list[tuple]:
            value = value.tolist() if hasattr(value, "tolist") else list(value or [])
            return [tuple(int(x) for x in r) for r in value if len(r) == width]

        return cls(
            epoch=int(d["epoch"]),
            t=int(d["t"]),
            next_piece=int(d["next_piece"]),
            open=rows(d.get("open", []), 2),
            out=int(d["out"]),
            buffer=rows(d.get("buffer", []), 4),
        )


Ref = tuple[int, int, int, int]  # (epoch, t, shard, position)


class SampleStream:
    """The endless, interleaved, shuffled emission stream of one slot.

    Iteration yields ((epoch, t, shard, position), payload); `state()` taken between two items
    resumes after the last one yielded. `source.prefetch` (default 0) pieces beyond the open
    ones are opened early, so a source that reads in the background has them in flight."""

    def __init__(
        self,
        plan: Plan,
        slot: int,
        n_slots: int,
        source: Source,
        state: StreamState | None = None,
    ) -> None:
        if not 0 <= slot < n_slots:
            raise ValueError(f"slot {slot} outside 0..{n_slots - 1}")
        self.plan, self.slot, self.n_slots, self.source = plan, slot, n_slots, source
        self._start = state or StreamState()
        s = self._start
        self._epoch, self._t, self._next = s.epoch, s.t, s.next_piece
        self._open: list[list[int]] = [[p, d] for p, d in s.open]
        self._out = s.out
        self._buffer: list[tuple[Ref, object]] = []
        self._picks: dict[str, tuple[tuple, np.ndarray]] = {}
        self._endless = False  # emissions() crosses epochs; epoch_emissions() does not
        self._early: tuple | None = None  # the next epoch's first pieces, opened early

    def state(self) -> StreamState:
        return StreamState(
            self._epoch,
            self._t,
            self._next,
            [(p, d) for p, d in self._open],
            self._out,
            [ref for ref, _ in self._buffer],
        )

    def _uniform(self, kind: int, *key: int) -> float:
        """Uniform number `key[-1]` of the generator named by (seed, kind, slot, key[:-1]),
        drawn in blocks."""
        *head, i = key
        name = (kind, *head, i // _BLOCK)
        cached = self._picks.get(str(kind))
        if cached is None or cached[0] != name:
            rng = np.random.default_rng([self.plan.seed, kind, self.slot, *head, i // _BLOCK])
            cached = (name, rng.random(_BLOCK))
            self._picks[str(kind)] = cached
        return float(cached[1][i % _BLOCK])

    # -- one epoch -----------------------------------------------------------------------------

    def _positions(self, ep: EpochPlan, piece: Piece) -> np.ndarray:
        return ep.piece_positions(piece, self.source.weights(piece.shard))

    def emissions(self) -> Iterator[tuple[Ref, object]]:
        """The slot's emissions from the cursor on, before the shuffle buffer, across epochs."""
        empty, limit = 0, empty_epoch_limit(self.plan, self.n_slots)
        self._endless = True
        try:
            while True:
                yield from self._one_epoch()
                if self._t > 0:
                    empty = 0
                else:  # nothing in this slot's share (or index weights all 0 where it fell)
                    empty += 1
                    if empty >= limit:
                        raise StreamError(
                            f"{empty} epochs in a row gave this loader stream no sample (the "
                            f"shards table promises {self.plan.expected_epoch_size:.3g} per "
                            f"epoch to {self.n_slots} streams): the index weights are 0, or "
                            "too small for this many streams"
                        )
                self._epoch, self._t, self._next, self._open = self._epoch + 1, 0, 0, []
        finally:
            if self._early is not None:
                for it in self._early[3].values():
                    _close(it)
                self._early = None

    def _one_epoch(self) -> Iterator[tuple[Ref, object]]:
        early, self._early = self._early, None
        if early is not None and early[0].epoch == self._epoch and self._t == 0:
            ep, pieces, positions, readers = early
            return self._epoch_emissions(ep, pieces, positions, readers)
        if early is not None:
            for it in early[3].values():
                _close(it)
        ep = EpochPlan(self.plan, self._epoch)
        return self._epoch_emissions(ep, ep.pieces(self.slot, self.n_slots))

    def _start_next_epoch(self, ep: EpochPlan, ahead: int) -> None:
        """Open the first `ahead` pieces of the next epoch early (object stores: their reads
        start while this epoch's last pieces are still being emitted)."""
        nxt = EpochPlan(self.plan, ep.epoch + 1)
        pieces = nxt.pieces(self.slot, self.n_slots)
        positions: dict[int, np.ndarray] = {}
        readers: dict[int, Iterator[object]] = {}
        for index, piece in enumerate(pieces[:ahead]):
            positions[index] = self._positions(nxt, piece)
            if len(positions[index]):
                readers[index] = self.source.read(piece.shard, positions[index].tolist())
        self._early = (nxt, pieces, positions, readers)

    def epoch_emissions(self, epoch: int) -> Iterator[tuple[Ref, object]]:
        """Emissions of one whole epoch of this slot (a fresh cursor), before the buffer."""
        self._epoch, self._t, self._next, self._open = epoch, 0, 0, []
        ep = EpochPlan(self.plan, epoch)
        return self._epoch_emissions(ep, ep.pieces(self.slot, self.n_slots))

    def _epoch_emissions(
        self,
        ep: EpochPlan,
        pieces: list[Piece],
        positions: dict[int, np.ndarray] | None = None,
        readers: dict[int, Iterator[object]] | None = None,
    ) -> Iterator[tuple[Ref, object]]:
        if self._next > len(pieces) or any(p >= self._next for p, _ in self._open):
            raise StreamError(
                f"the saved loader position (piece {self._next} of epoch {ep.epoch}) is not one "
                "of this data: the checkpoint's loader state belongs to other data"
            )
        positions = {} if positions is None else positions
        readers = {} if readers is None else readers
        ahead = max(0, int(getattr(self.source, "prefetch", 0)))
        started_next = False

        def reader(index: int, done: int) -> Iterator[object]:
            if index not in readers:
                pos = positions.setdefault(index, self._positions(ep, pieces[index]))
                if done > len(pos):
                    raise StreamError(
                        f"the saved loader position is past the end of piece {index} of epoch "
                        f"{ep.epoch}: the checkpoint's loader state belongs to other data"
                    )
                readers[index] = self.source.read(pieces[index].shard, pos[done:].tolist())
            return readers[index]

        def has_left(index: int, done: int) -> bool:
            """Whether the piece has emissions left (one of a shard whose index weights are
            all 0 has none); a reader is made only for one that has."""
            pos = positions.setdefault(index, self._positions(ep, pieces[index]))
            return done < len(pos)

        self._open = [[i, d] for i, d in self._open if has_left(i, d)]
        for index, done in self._open:
            reader(index, done)
        try:
            while True:
                while len(self._open) < self.plan.open_shards and self._next < len(pieces):
                    if has_left(self._next, 0):
                        self._open.append([self._next, 0])
                        reader(self._next, 0)
                    self._next += 1
                for index in range(self._next, min(len(pieces), self._next + ahead)):
                    if has_left(index, 0):
                        reader(index, 0)
                if ahead and self._endless and not started_next and self._next >= len(pieces):
                    started_next = True
                    self._start_next_epoch(ep, ahead)
                if not self._open:
                    return
                u = self._uniform(_PICK, ep.epoch, self._t)
                j = min(int(u * len(self._open)), len(self._open) - 1)
                index, done = self._open[j]
                try:
                    payload = next(readers[index])
                except StopIteration:
                    raise StreamError(
                        f"shard {pieces[index].shard} gave fewer samples than its index lists"
                    ) from None
                ref = (ep.epoch, self._t, pieces[index].shard, int(positions[index][done]))
                self._t += 1
                self._open[j][1] += 1
                if self._open[j][1] >= len(positions[index]):
                    del self._open[j]
                    _close(readers.pop(index))
                yield ref, payload
        finally:
            for it in readers.values():
                _close(it)

    # -- the shuffle buffer --------------------------------------------------------------------

    def _restore_buffer(self) -> None:
        wanted: dict[int, set[int]] = {}
        for _, _, shard, pos in self._start.buffer:
            if not 0 <= shard < self.plan.num_shards:
                raise StreamError(
                    f"the saved shuffle buffer names shard {shard}; this data has "
                    f"{self.plan.num_shards}: the checkpoint's loader state belongs to other data"
                )
            wanted.setdefault(shard, set()).add(pos)
        payloads: dict[tuple[int, int], object] = {}
        for shard, positions in wanted.items():
            order = sorted(positions)
            if order and order[-1] >= len(self.source.weights(shard)):
                raise StreamError(
                    f"the saved shuffle buffer holds sample {order[-1]} of shard {shard}, which "
                    "it does not have: the checkpoint's loader state belongs to other data"
                )
            for pos, payload in zip(order, self.source.read(shard, order), strict=False):
                payloads[(shard, pos)] = payload
        self._buffer = [(ref, payloads[(ref[2], ref[3])]) for ref in self._start.buffer]

    def __iter__(self) -> Iterator[tuple[Ref, object]]:
        self._restore_buffer()
        size = self.plan.buffer_size
        for item in self.emissions():
            if len(self._buffer) < size:
                self._buffer.append(item)
                continue
            j = int(self._uniform(_BUF, self._out) * len(self._buffer))
            out, self._buffer[j] = self._buffer[j], item
            self._out += 1
            yield out


def _close(it) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()
