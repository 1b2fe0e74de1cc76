"""`IngestSummary`: what one ingest run did, as the table `weakly ingest` prints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IngestSummary:
    out: str
    input_rows: int
    written: int
    rejected: int
    rejects_by_reason: dict[str, int]
    eval_matches_by_set: dict[str, int]
    shards: int
    bytes: int
    seconds: float
    images_per_second: float

    def table(self) -> str:
        lines = [
            f"{'rows in':<28}{self.input_rows:>12,}",
            f"{'written':<28}{self.written:>12,}",
            f"{'rejected':<28}{self.rejected:>12,}",
        ]
        for reason, n in sorted(self.rejects_by_reason.items(), key=lambda x: (-x[1], x[0])):
            lines.append(f"{'  ' + reason:<28}{n:>12,}")
        for eval_set, n in sorted(self.eval_matches_by_set.items()):
            lines.append(f"{'eval matches ' + eval_set:<28}{n:>12,}")
        lines += [
            f"{'shards':<28}{self.shards:>12,}",
            f"{'bytes':<28}{self.bytes:>12,}",
            f"{'images/s':<28}{self.images_per_second:>12,.1f}",
            f"output: {self.out}",
        ]
        return "\n".join(lines)
