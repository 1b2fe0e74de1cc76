"""Sense overrides: hashtag -> synset rows that beat the visual sense score.

A small reviewed table ships with weakly (`data/sense_overrides.csv`) for common photo hashtags
whose every WordNet-derived signal points the wrong way (`#seal` scores sealing wax above the
animal); users add their own with `--sense-overrides FILE`, whose rows win over the shipped
ones. Format, UTF-8 CSV with an optional header line:

    hashtag,synset,reason
    seal,seal.n.09,the animal; sealing wax is WordNet's first sense
    #nails,n05581693,nail art photos show fingernails

`synset` is a wnid or a WordNet name (`crane.n.05`, see wordnet_tools/exact.py); `reason` is
optional. The hashtag is normalised like any tag, and the override also covers the plural
forms of that lemma that can name the synset (`seal` covers `#seals`). An override applies
where its synset is in the vocabulary; elsewhere the tag resolves as if it had none. A bad row
stops the load with one line naming the file and line.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .exact import ExactLabels
from .normalise import normalise_tag

SHIPPED_OVERRIDES = Path(__file__).parent / "data" / "sense_overrides.csv"
SHIPPED_LABEL = "wordnet_tools/data/sense_overrides.csv"
HEADER = ("hashtag", "synset")
MAX_OVERRIDES_BYTES = 16 << 20  # a reviewed table is kilobytes; a larger file is a wrong path


class OverrideError(ValueError):
    """A sense-overrides file that cannot be used; the message names file:line."""


@dataclass(frozen=True)
class Override:
    form: str  # the normalised hashtag
    wnid: str
    source: str  # file:line
    reason: str = ""


def read_overrides(
    path: str | os.PathLike[str], exact: ExactLabels, label: str | None = None
) -> list[Override]:
    """Parse and check one overrides file; synsets are resolved through `exact`. `label` names
    the file in messages and sources (default: the path as given)."""
    path = Path(path)
    label = label or str(path)
    try:
        if path.stat().st_size > MAX_OVERRIDES_BYTES:
            raise OverrideError(
                f"{label}: sense overrides file is over {MAX_OVERRIDES_BYTES:,} bytes"
            )
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise OverrideError(f"{label}: sense overrides file not found") from None
    except UnicodeDecodeError:
        raise OverrideError(f"{label}: sense overrides file is not UTF-8") from None
    found: dict[str, Override] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        where = f"{label}:{number}"
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if number == 1 and tuple(c.lower() for c in cells[:2]) == HEADER:
            continue
        if len(cells) < 2 or len(cells) > 3:
            raise OverrideError(
                f"{where}: expected hashtag,synset[,reason], got {len(cells)} cells"
            )
        form = normalise_tag(cells[0])
        if form is None:
            raise OverrideError(f"{where}: {cells[0]!r} is not a usable hashtag")
        wnid = exact.resolve(cells[1])
        if wnid is None:
            raise OverrideError(
                f"{where}: {cells[1]!r} is not a WordNet 3.0 noun synset "
                "(use a wnid like n02012849 or a name like crane.n.05)"
            )
        if form in found and found[form].wnid != wnid:
            raise OverrideError(
                f"{where}: {cells[0]!r} is overridden already at {found[form].source}"
            )
        found.setdefault(form, Override(form, wnid, where, cells[2] if len(cells) > 2 else ""))
    return list(found.values())


def merge_overrides(*tables: list[Override]) -> dict[str, Override]:
    """form -> override; a later table's row wins over an earlier one's for the same form."""
    merged: dict[str, Override] = {}
    for table in tables:
        for row in table:
            merged[row.form] = row
    return merged
