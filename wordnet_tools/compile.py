"""Compiling WordNet's nouns into a flat surface-form table.

Runs once per WordNet copy (seconds), so canonicalising billions of tags later is one dict
lookup per distinct tag and never touches NLTK. Each row says that a normalised surface form can
name a synset: either as one of its lemmas (`kind=0`) or as an inflection of a lemma that
WordNet's own morphology maps back to it (`kind=1`, e.g. `geese`, `brownbears`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from .normalise import normalise_tag

LEMMA, INFLECTION = 0, 1
BUILDER_VERSION = 2  # bump when the table's meaning changes: it is part of the cache key

FORMS_SCHEMA = pa.schema(
    [
        ("form", pa.string()),
        ("wnid", pa.string()),
        ("kind", pa.int8()),  # 0 lemma, 1 inflection
        ("sense_rank", pa.int16()),  # 0 = the form's most frequent sense
        ("n_senses", pa.int16()),  # distinct synsets this form can name (ambiguity)
        ("lemma", pa.string()),  # the WordNet lemma the form came from
    ]
)
SYNSETS_SCHEMA = pa.schema(
    [
        ("wnid", pa.string()),
        ("name", pa.string()),
        ("lemmas", pa.string()),  # all lemma names, comma-separated
        ("lexname", pa.string()),
        ("gloss", pa.string()),
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


def compile_tables(reader) -> tuple[pa.Table, pa.Table]:
    """Build (forms, synsets) tables from an NLTK WordNet reader. Deterministic."""
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

    # One row per (form, wnid): its best kind and rank; sorted so the first row per form wins.
    best: dict[tuple[str, str], tuple[int, int, str]] = {}
    for form, wnid, kind, rank, lemma in raw_rows:
        key = (form, wnid)
        if key not in best or (kind, rank) < best[key][:2]:
            best[key] = (kind, rank, lemma)
    senses_per_form: dict[str, int] = {}
    for form, _ in best:
        senses_per_form[form] = senses_per_form.get(form, 0) + 1
    ordered = sorted(
        best.items(), key=lambda item: (item[0][0], item[1][0], item[1][1], item[0][1])
    )
    forms = pa.table(
        {
            "form": [f for (f, _), _ in ordered],
            "wnid": [w for (_, w), _ in ordered],
            "kind": [v[0] for _, v in ordered],
            "sense_rank": [v[1] for _, v in ordered],
            "n_senses": [senses_per_form[f] for (f, _), _ in ordered],
            "lemma": [v[2] for _, v in ordered],
        },
        schema=FORMS_SCHEMA,
    )

    synsets = sorted(reader.all_synsets("n"), key=wnid_of)
    synset_table = pa.table(
        {
            "wnid": [wnid_of(s) for s in synsets],
            "name": [s.lemmas()[0].name() for s in synsets],
            "lemmas": [",".join(lem.name() for lem in s.lemmas()) for s in synsets],
            "lexname": [s.lexname() for s in synsets],
            "gloss": [s.definition() for s in synsets],
        },
        schema=SYNSETS_SCHEMA,
    )
    return forms, synset_table
