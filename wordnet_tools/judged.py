"""The judged photo-hashtag list and the sense accuracy measured on it.

`data/photo_hashtags_judged.csv` holds frequent photo hashtags (animals, food, plants, objects,
vehicles, clothing, places, people, and the ambiguous ones) with the synsets a person would say
a photo tagged that way shows (several where more than one is a fair reading), judged from the
glosses before the sense choice was tuned. Used by `benchmarks/sense_accuracy.py` and the tests.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

JUDGED_FILE = Path(__file__).parent / "data" / "photo_hashtags_judged.csv"


@dataclass(frozen=True)
class Judged:
    hashtag: str
    wnids: frozenset[str]  # every acceptable synset
    names: tuple[str, ...]  # the same, as WordNet names (for people reading the file)
    note: str


def read_judged(path: Path = JUDGED_FILE) -> list[Judged]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            Judged(
                row["hashtag"],
                frozenset(row["wnids"].split()),
                tuple(row["synsets"].split()),
                row["note"],
            )
            for row in csv.DictReader(handle)
        ]


def sense_accuracy(lexicon, judged: list[Judged]) -> tuple[float, list[tuple[Judged, str | None]]]:
    """(fraction of hashtags resolved to an acceptable synset, the misses with what they got)."""
    misses = []
    for item in judged:
        got = lexicon.canonical(item.hashtag)
        if got not in item.wnids:
            misses.append((item, got))
    return 1.0 - len(misses) / len(judged), misses
