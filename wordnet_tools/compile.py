"""Compiling WordNet's nouns into a flat surface-form table.

Runs once per WordNet copy (seconds), so canonicalising billions of tags later is one dict
lookup per distinct tag and never touches NLTK. Each row says that a normalised surface form can
name a synset: either as one of its lemmas (`kind=0`) or as an inflection of a lemma that
WordNet's own morphology maps back to it (`kind=1`, e.g. `geese`, `brownbears`). Within a form
the rows are ordered by the visual sense score (wordnet_tools/senses.py), best first, so loading
a vocabulary keeps the first row per form and lookup stays one dict access.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from .normalise import normalise_tag
from .senses import (
    PRODUCE_ROOTS,
    SynsetFacts,
    order_key,
    photo_counts,
    under_roots,
    visual_score,
)
from .vocab import in1k_synsets, in21k_synsets

LEMMA, INFLECTION = 0, 1
BUILDER_VERSION = 3  # bump when the table's meaning changes: it is part of the cache key

FORMS_SCHEMA = pa.schema(
    [
        ("form", pa.string()),
        ("wnid", pa.string()),
        ("kind", pa.int8()),  # 0 lemma, 1 inflection
        ("sense_rank", pa.int16()),  # 0 = WordNet's first (most frequent in text) sense
        ("n_senses", pa.int16()),  # distinct synsets this form can name (ambiguity)
        ("lemma", pa.string()),  # the WordNet lemma the form came from
        ("score", pa.float32()),  # the visual sense score; rows of a form are best first
    ]
)
SYNSETS_SCHEMA = pa.schema(
    [
        ("wnid", pa.string()),
        ("name", pa.string()),
        ("lemmas", pa.string()),  # all lemma names, comma-separated
        ("lexname", pa.string()),
        ("gloss", pa.string()),
        ("wn_name", pa.string()),  # NLTK's name, e.g. crane.n.05 (exact labels)
        ("instance", pa.bool_()),  # a proper name
        ("produce", pa.bool_()),  # an edible fruit or vegetable
        ("photo_count", pa.int32()),  # ImageNet-21k synsets at or under it
    ]
)


def wnid_of(synset) -> str:
    """The WordNet 3.0 id used by ImageNet's synset lists: `n` + 8-digit data.noun offset."""
    return f"{synset.pos()}{synset.offset():08d}"


def plural_candidates(lemma: str) -> Iterator[str]:
    """Regular English plurals of a lemma; each is kept only if WordNet morphology agrees."""
    yield lemma + "s"
    if lemma.endswith(("s", "x", "z", "ch", "sh")):
        yield lemma + "es"
    if lemma.endswith("man"):
        yield lemma[:-3] + "men"
    if len(lemma) > 1 and lemma.endswith("y") and lemma[-2] not in "aeiou":
        yield lemma[:-1] + "ies"


def noun_exceptions(reader) -> dict[str, list[str]]:
    """WordNet's irregular noun inflections (`noun.exc`): inflected form -> base lemmas."""
    exceptions: dict[str, list[str]] = {}
    with reader.open("noun.exc") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2:
                exceptions.setdefault(parts[0], []).extend(parts[1:])
    return exceptions


def _rows_for(form_source: str, synsets: Iterable, kind: int, lemma: str):
    form = normalise_tag(form_source)
    if form is None:
        return
    for rank, synset in enumerate(synsets):
        yield form, wnid_of(synset), kind, rank, lemma


def synset_facts(synsets: list) -> dict[str, SynsetFacts]:
    """What the visual sense score needs to know about every noun synset (`synsets`: all of
    them, from the reader)."""
    hypernyms = {wnid_of(s): [wnid_of(h) for h in s.hypernyms()] for s in synsets}
    hyponyms = {wnid_of(s): [wnid_of(h) for h in s.hyponyms()] for s in synsets}
    photos = photo_counts(set(in21k_synsets()) | set(in1k_synsets()), hypernyms)
    produce = under_roots(PRODUCE_ROOTS, hyponyms)
    return {
        wnid_of(s): SynsetFacts(
            lexname=s.lexname(),
            instance=bool(s.instance_hypernyms()),
            produce=wnid_of(s) in produce,
            photo_count=photos.get(wnid_of(s), 0),
        )
        for s in synsets
    }


def compile_tables(reader) -> tuple[pa.Table, pa.Table]:
    """Build (forms, synsets) tables from an NLTK WordNet reader. Deterministic."""
    synsets = sorted(reader.all_synsets("n"), key=wnid_of)  # WordNet's noun data read once
    facts = synset_facts(synsets)
    lemma_names = sorted(reader.all_lemma_names("n"))
    lemma_set = set(lemma_names)
    raw_rows: list[tuple[str, str, int, int, str]] = []
    for name in lemma_names:
        senses = [lem.synset() for lem in reader.lemmas(name, "n")]
        raw_rows.extend(_rows_for(name, senses, LEMMA, name))

    inflected: dict[str, str] = {}
    for name in lemma_names:
        for candidate in plural_candidates(name):
            inflected.setdefault(candidate, name)
    for form, bases in noun_exceptions(reader).items():
        for base in bases:
            if base in lemma_set:
                inflected.setdefault(form, base)
    # A candidate that is also a lemma (`glasses`) keeps both readings: its lemma rows rank
    # first, and the inflection rows (`glass`) serve vocabularies that lack the lemma's synsets.
    for candidate in sorted(inflected):
        senses = reader.synsets(candidate, "n")  # NLTK applies WordNet morphology here
        raw_rows.extend(_rows_for(candidate, senses, INFLECTION, inflected[candidate]))

    # One row per (form, wnid): its best kind and rank, scored; sorted so that within a form
    # the best row comes first (the row a vocabulary holding every candidate keeps).
    best: dict[tuple[str, str], tuple[int, int, str, float]] = {}
    for form, wnid, kind, rank, lemma in raw_rows:
        key = (form, wnid)
        if key not in best or (kind, rank) < best[key][:2]:
            best[key] = (kind, rank, lemma, visual_score(facts[wnid], kind, rank))
    senses_per_form: dict[str, int] = {}
    for form, _ in best:
        senses_per_form[form] = senses_per_form.get(form, 0) + 1
    ordered = sorted(
        best.items(),
        key=lambda item: (item[0][0], *order_key(item[1][3], item[1][0], item[1][1], item[0][1])),
    )
    forms = pa.table(
        {
            "form": [f for (f, _), _ in ordered],
            "wnid": [w for (_, w), _ in ordered],
            "kind": [v[0] for _, v in ordered],
            "sense_rank": [v[1] for _, v in ordered],
            "n_senses": [senses_per_form[f] for (f, _), _ in ordered],
            "lemma": [v[2] for _, v in ordered],
            "score": [v[3] for _, v in ordered],
        },
        schema=FORMS_SCHEMA,
    )

    synset_table = pa.table(
        {
            "wnid": [wnid_of(s) for s in synsets],
            "name": [s.lemmas()[0].name() for s in synsets],
            "lemmas": [",".join(lem.name() for lem in s.lemmas()) for s in synsets],
            "lexname": [s.lexname() for s in synsets],
            "gloss": [s.definition() for s in synsets],
            "wn_name": [s.name() for s in synsets],
            "instance": [facts[wnid_of(s)].instance for s in synsets],
            "produce": [facts[wnid_of(s)].produce for s in synsets],
            "photo_count": [facts[wnid_of(s)].photo_count for s in synsets],
        },
        schema=SYNSETS_SCHEMA,
    )
    return forms, synset_table
