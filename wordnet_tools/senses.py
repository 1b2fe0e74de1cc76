"""The visual sense choice: which of a form's synsets a photo tagged with it most likely shows.

WordNet orders a word's senses by how often they occur in tagged literary text, so its first
sense of `crane` is Stephen Crane, of `tiger` a fierce person and of `cake` a block of soap.
Photos are tagged with what they show, so each candidate (form, synset) gets a score from facts
WordNet and ImageNet hold about the synset, and the highest score wins:

  kind of thing  +3 animal, plant, food, artifact, natural object, body, substance, phenomenon,
                    location, shape, event, top-level concept; +2 person or group (people,
                    alone or together); 0 the rest (attribute, act, communication, cognition,
                    time, quantity, state, ...)
  proper name    -4 a named person (a person instance: Stephen Crane); -1 any other instance
                    (New Jersey, the Snake river; the Moon keeps a chance)
  produce        +1 an edible fruit or vegetable: a photo of `lime` or `banana` shows the fruit,
                    not the tree that bears it
  photo prior    +0.5 + 0.25 log2(n) where n > 0 is the number of ImageNet-21k synsets at or
                    under this synset (senses under which people collected photos; a broad
                    visual category such as the seal animal counts many)
  inflection     -0.5 when the form is an inflection of the lemma rather than the lemma itself
  sense order    -0.3 per step down WordNet's sense order (its frequency still counts)

Ties go to WordNet's order (lemma before inflection, sense rank, wnid), so the choice is
deterministic. The weights are round numbers set by measuring accuracy on a judged list of
photo hashtags (`benchmarks/sense_accuracy.py`); every part is shown by
`weakly lexicon lookup --explain`. Everything here runs once, when the lexicon is compiled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

THING_LEXNAMES = frozenset(
    {
        "noun.animal",
        "noun.plant",
        "noun.food",
        "noun.artifact",
        "noun.object",
        "noun.body",
        "noun.substance",
        "noun.phenomenon",
        "noun.location",
        "noun.shape",
        "noun.event",
        "noun.Tops",
    }
)
KIND_POINTS = {"thing": 3.0, "person": 2.0, "group": 2.0, "other": 0.0}
PERSON_NAME_POINTS = -4.0
OTHER_NAME_POINTS = -1.0
PRODUCE_POINTS = 1.0
PHOTO_BASE, PHOTO_PER_DOUBLING = 0.5, 0.25
INFLECTION_POINTS = -0.5
RANK_POINTS = -0.3
# Roots whose hyponyms count as produce (WordNet 3.0 ids: edible_fruit.n.01, vegetable.n.01).
PRODUCE_ROOTS = ("n07705931", "n07707451")


@dataclass(frozen=True)
class SynsetFacts:
    """What the score needs to know about one synset (stored in the compiled synsets table)."""

    lexname: str
    instance: bool  # an instance (a proper name): Stephen Crane, New Jersey, the Moon
    produce: bool  # an edible fruit or vegetable
    photo_count: int  # ImageNet-21k synsets at or under this synset


def lexname_class(lexname: str) -> str:
    if lexname in THING_LEXNAMES:
        return "thing"
    if lexname == "noun.person":
        return "person"
    if lexname == "noun.group":
        return "group"
    return "other"


def score_parts(facts: SynsetFacts, kind: int, sense_rank: int) -> dict[str, float]:
    """Each part of the score, named; their sum is the score (for `--explain` and audits)."""
    cls = lexname_class(facts.lexname)
    parts = {"kind": KIND_POINTS[cls]}
    if facts.instance:
        parts["proper_name"] = PERSON_NAME_POINTS if cls == "person" else OTHER_NAME_POINTS
    if facts.produce:
        parts["produce"] = PRODUCE_POINTS
    if facts.photo_count > 0:
        parts["photo"] = PHOTO_BASE + PHOTO_PER_DOUBLING * math.log2(facts.photo_count)
    if kind:
        parts["inflection"] = INFLECTION_POINTS
    if sense_rank:
        parts["sense_order"] = RANK_POINTS * sense_rank
    return parts


def visual_score(facts: SynsetFacts, kind: int, sense_rank: int) -> float:
    return round(sum(score_parts(facts, kind, sense_rank).values()), 6)


def order_key(score: float, kind: int, sense_rank: int, wnid: str) -> tuple:
    """Best first: higher score, then WordNet's own order."""
    return (-score, kind, sense_rank, wnid)


def photo_counts(
    photo_ids: Iterable[str], hypernyms: Mapping[str, Iterable[str]]
) -> dict[str, int]:
    """For every synset, how many of `photo_ids` are it or under it (each counted once even
    where WordNet's hierarchy has several paths). `hypernyms`: wnid -> its direct hypernyms."""
    counts: dict[str, int] = {}
    for wnid in set(photo_ids):
        seen = {wnid}
        stack = [wnid]
        while stack:
            for parent in hypernyms.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        for node in seen:
            counts[node] = counts.get(node, 0) + 1
    return counts


def under_roots(roots: Iterable[str], hyponyms: Mapping[str, Iterable[str]]) -> set[str]:
    """The roots and everything under them."""
    found = set(roots)
    stack = list(found)
    while stack:
        for child in hyponyms.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
