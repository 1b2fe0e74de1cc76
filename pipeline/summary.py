"""`IngestSummary`: what one ingest run did, as the table `weakly ingest` prints, and the row
format that table and `--plan-only`'s share."""

from __future__ import annotations

from dataclasses import dataclass, field


def row(label: str, n: int) -> str:
    """One line of a printed table: a label and a right-aligned count."""
    return f"{label:<28}{n:>12,}"


def count_rows(counts: dict[str, int]) -> list[str]:
    """Indented rows of `counts`, most first (reject reasons under their total)."""
    return [row("  " + k, n) for k, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]


def noise_rows(noise: dict) -> list[str]:
    """Label noise, nominal and realised, when any was asked for."""
    if not noise or not noise.get("nominal"):
        return []
    return [
        f"{'label noise nominal':<28}{noise['nominal']:>12.4f}",
        f"{'label noise realised':<28}{noise['realised']:>12.4f}",
    ]


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
    noise: dict = field(default_factory=dict)  # plan.json's label-noise tally
    phases: dict = field(default_factory=dict)  # {phase: {"wall", "cpu"}} (pipeline/phases.py)

    def profile(self) -> str:
        """`--profile`: where the job's wall time went, phase by phase."""
        from .phases import phase_rows

        return "\n".join(phase_rows(self.phases, self.seconds))

    def table(self) -> str:
        lines = [
            row("rows in", self.input_rows),
            row("written", self.written),
            row("rejected", self.rejected),
            *count_rows(self.rejects_by_reason),
            *noise_rows(self.noise),
        ]
        for eval_set, n in sorted(self.eval_matches_by_set.items()):
            lines.append(row("eval matches " + eval_set, n))
        lines += [
            row("shards", self.shards),
            row("bytes", self.bytes),
            f"{'images/s':<28}{self.images_per_second:>12,.1f}",
            f"output: {self.out}",
        ]
        return "\n".join(lines)
