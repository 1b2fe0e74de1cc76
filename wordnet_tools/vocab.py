"""Vocabularies: which synsets a dataset's labels may use.

`in1k` is the 1000 ImageNet-1k synsets, `in21k` the 21,843 ImageNet-21k synsets (the senses
under which people collected photos), `nouns` every WordNet noun synset, `top:K` the K synsets
most frequent in the corpus (counted by the ingest job). A vocabulary is a sorted tuple of wnids
so its order, and hence class indices, never depend on how it was produced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_WNID = re.compile(r"^n\d{8}$")
IN1K_FILE = Path(__file__).parent / "data" / "in1k_synsets.txt"
IN21K_FILE = Path(__file__).parent / "data" / "in21k_synsets.txt"
FIXED_VOCABULARIES = ("in1k", "in21k", "nouns")


def in1k_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (see data/README.md for the source)."""
    ids = tuple(IN1K_FILE.read_text().split())
    assert len(ids) == 1000 and len(set(ids)) == 1000, "shipped in1k list is corrupt"
    return ids


def in21k_synsets() -> tuple[str, ...]:
    """The 21,843 ImageNet-21k (fall 2011) wnids in file order (see data/README.md)."""
    ids = tuple(IN21K_FILE.read_text().split())
    assert len(ids) == 21843 and len(set(ids)) == 21843, "shipped in21k list is corrupt"
    return ids


def top_k_vocabulary(counts: Mapping[str, int], k: int) -> tuple[str, ...]:
    """The k most frequent synsets; ties broken by wnid so the choice is deterministic."""
    if k <= 0:
        raise ValueError(f"top:K needs K >= 1, got {k}")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(sorted(wnid for wnid, count in ranked[:k] if count > 0))


def parse_vocab_spec(spec: str) -> tuple[str, int | None]:
    """`in1k` | `in21k` | `nouns` | `top:K` -> (kind, K). Raises ValueError naming the forms."""
    if spec in FIXED_VOCABULARIES:
        return spec, None
    if spec.startswith("top:"):
        try:
            return "top", int(spec[4:])
        except ValueError:
            pass
    raise ValueError(
        f"unknown vocabulary {spec!r}: use in1k, in21k, nouns, or top:K (e.g. top:8500)"
    )


def resolve_vocabulary(
    spec: str | Iterable[str],
    all_noun_ids: Iterable[str],
    counts: Mapping[str, int] | None = None,
) -> tuple[str, ...]:
    """Turn a spec or an explicit list of wnids into a sorted tuple of known noun wnids."""
    known = set(all_noun_ids)
    if isinstance(spec, str):
        kind, k = parse_vocab_spec(spec)
        if kind == "nouns":
            return tuple(sorted(known))
        if kind == "in1k":
            ids: Iterable[str] = in1k_synsets()
        elif kind == "in21k":
            ids = in21k_synsets()
        else:
            if counts is None:
                raise ValueError(f"vocabulary {spec!r} needs corpus counts (wnid -> images)")
            ids = top_k_vocabulary(counts, k or 0)
    else:
        ids = spec
    ids = tuple(sorted(set(ids)))
    bad = [i for i in ids if not _WNID.match(i) or i not in known]
    if bad:
        raise ValueError(f"{len(bad)} ids are not WordNet 3.0 noun synsets, e.g. {bad[:5]}")
    return ids
