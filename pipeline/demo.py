"""`weakly demo`: the whole system on an embedded default, run by `make demo`.

Today it shows canonicalisation: raw hashtags of the kind found on photo sites (synonyms,
plurals, CamelCase, junk) merged into WordNet synsets under each vocabulary.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from wordnet_tools import load_lexicon

DEMO_TAGS = [
    "#BrownBear", "#ursusarctos", "#grizzly", "#bears", "#Couch", "#sofa", "#sofas",
    "#car", "#automobile", "#Cars", "#plane", "#aeroplane", "#airplanes", "#geese",
    "#goose", "#puppy", "#dogs", "#instagood", "#love", "#2024", "#🐻", "#photooftheday",
    "#Cat", "#kitty", "#GoldenRetriever", "#golden_retriever", "#coffee", "#espresso",
]  # fmt: skip


def run_lexicon_demo(tags: list[str] = DEMO_TAGS) -> str:
    lines = []
    for vocab in ("nouns", "in1k"):
        lex = load_lexicon(vocab)
        merged: dict[str, list[str]] = defaultdict(list)
        dropped = []
        for tag, wnid in zip(tags, lex.canonical_many(tags), strict=True):
            (merged[wnid] if wnid else dropped).append(tag)
        lines.append(f"vocabulary {vocab}: {len(lex)} synsets")
        for wnid, group in sorted(merged.items()):
            lines.append(f"  {wnid} {lex.name(wnid):<20} <- {' '.join(group)}")
        lines.append(f"  dropped (no synset in vocabulary): {' '.join(dropped)}")
    return "\n".join(lines)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the end-to-end demo on bundled data")
    parser.set_defaults(func=lambda args: print(run_lexicon_demo()))
