"""The Lexicon: raw tag -> canonical WordNet synset id, for one vocabulary.

Resolution is decided once at load time, so `canonical` is a memoised dict lookup. A form that
names several synsets resolves to the one in the vocabulary if only one is; otherwise to the
sense a photo most likely shows: a sense override (wordnet_tools/overrides.py) if one names a
synset in the vocabulary, else the best visual sense score among those in the vocabulary
(wordnet_tools/senses.py; computed when the lexicon is compiled, ties to WordNet's order), so
the choice is deterministic. A tag that is no word but a wnid or a WordNet name is taken as that
synset (wordnet_tools/exact.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .compile import LEMMA
from .exact import ExactLabels, looks_exact
from .normalise import normalise_tag
from .overrides import (
    SHIPPED_LABEL,
    SHIPPED_OVERRIDES,
    Override,
    merge_overrides,
    read_overrides,
)
from .senses import SynsetFacts, score_parts
from .store import build_lexicon, read_tables
from .vocab import resolve_vocabulary

_MISS = object()
MEMO_LIMIT = 1 << 21  # distinct raw tags remembered before the memo is reset


@dataclass(frozen=True)
class Match:
    """How one tag resolved; for `weakly lexicon lookup` and audits."""

    tag: object
    form: str | None
    wnid: str | None
    name: str | None
    how: str  # "lemma", "inflection", "exact label", "not a word", "not in WordNet",
    # "not in vocabulary"
    lemma: str | None = None
    sense_rank: int | None = None
    n_senses: int = 0  # synsets the form names in all of WordNet
    n_in_vocab: int = 0  # of those, how many are in this vocabulary
    decided_by: str | None = None  # "only sense", "override FILE:LINE", "visual score", "exact"
    candidates: tuple[dict, ...] = ()  # every sense of the form, best first, with score parts


def _maybe_exact(form: str) -> bool:
    """Cheap first test on a form that named no word: could its tag be `n02012849` or
    `crane.n.05` (normalised `cranen05`)? Keeps the miss path fast for junk tags."""
    if form[0] == "n" and len(form) == 9 and form[1:].isdigit():
        return True
    return len(form) > 3 and form[-3] == "n" and form[-2:].isdigit()


class Lexicon:
    """Canonicalises tags into one vocabulary. Picklable, so Ray workers receive a copy."""

    def __init__(
        self,
        forms: pa.Table,
        synsets: pa.Table,
        vocabulary: Sequence[str],
        vocab_name: str,
        overrides: Mapping[str, Override] | None = None,
        exact: ExactLabels | None = None,
    ):
        self.vocab_name = vocab_name
        self.vocabulary: tuple[str, ...] = tuple(vocabulary)
        self._vocab_set = frozenset(self.vocabulary)
        self._forms = forms
        self._synsets = synsets
        self._names = dict(
            zip(synsets.column("wnid").to_pylist(), synsets.column("name").to_pylist(), strict=True)
        )
        in_vocab = forms.filter(pc.is_in(forms.column("wnid"), pa.array(self.vocabulary)))
        form_list = in_vocab.column("form").to_pylist()
        wnid_list = in_vocab.column("wnid").to_pylist()
        # Rows are sorted best-first within a form; reversed assignment keeps the first.
        self._form_to_wnid: dict[str, str] = dict(
            zip(reversed(form_list), reversed(wnid_list), strict=True)
        )
        self._overrides: dict[str, Override] = {}  # form -> the override that decided it
        self._apply_overrides(overrides or {})
        self._memo: dict[object, str | None] = {}
        self._all_forms: frozenset[str] | None = None
        self._exact = exact

    def _apply_overrides(self, overrides: Mapping[str, Override]) -> None:
        """Point each overridden form (and the plurals of its lemma that name the same synset,
        where they are no lemma themselves) at its synset, if that synset is in the vocabulary."""
        live = {o.form: o for o in overrides.values() if o.wnid in self._vocab_set}
        if not live:
            return
        forms = self._forms
        rows = forms.filter(
            pc.is_in(forms.column("wnid"), pa.array(sorted({o.wnid for o in live.values()})))
        ).to_pylist()
        for override in live.values():
            self._form_to_wnid[override.form] = override.wnid
            self._overrides[override.form] = override
        plurals = {
            row["form"]: live[lemma]
            for row in rows
            if (lemma := normalise_tag(row["lemma"]) or "") in live
            and row["wnid"] == live[lemma].wnid
            and row["form"] not in live
        }
        if not plurals:
            return
        # A plural that is a lemma itself (`glasses`) keeps its own meaning.
        candidates = forms.filter(pc.is_in(forms.column("form"), pa.array(sorted(plurals))))
        lemmas = set(
            candidates.filter(pc.equal(candidates.column("kind"), LEMMA))["form"].to_pylist()
        )
        for form, override in plurals.items():
            if form not in lemmas:
                self._form_to_wnid[form] = override.wnid
                self._overrides[form] = override

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_memo"] = {}
        state["_all_forms"] = None
        state["_exact"] = None  # rebuilt on first use
        return state

    def exact_labels(self) -> ExactLabels:
        if self._exact is None:
            self._exact = ExactLabels(self._forms, self._synsets)
        return self._exact

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._vocab_set

    def __repr__(self) -> str:
        return f"Lexicon({self.vocab_name!r}, {len(self)} synsets, {len(self._form_to_wnid)} forms)"

    def name(self, wnid: str) -> str:
        """The synset's first lemma name (`brown_bear`); any WordNet noun, not only the vocab."""
        try:
            return self._names[wnid]
        except KeyError:
            raise KeyError(f"{wnid!r} is not a WordNet 3.0 noun synset id") from None

    def in_wordnet(self, tag: object) -> bool:
        """Whether the tag names any WordNet noun, in this vocabulary or not (for reject reasons)."""
        if self._all_forms is None:
            self._all_forms = frozenset(self._forms.column("form").to_pylist())
        form = normalise_tag(tag)
        if form is not None and form in self._all_forms:
            return True
        return looks_exact(tag) and self.exact_labels().resolve(tag) is not None

    def canonical(self, tag: object) -> str | None:
        """The tag's synset id in this vocabulary, or None. Never raises on any input."""
        try:
            found = self._memo.get(tag, _MISS)
        except TypeError:  # unhashable input (a list, a dict): not a tag
            return None
        if found is _MISS:
            form = normalise_tag(tag)
            found = None if form is None else self._form_to_wnid.get(form)
            if found is None and form is not None and _maybe_exact(form) and looks_exact(tag):
                found = self._exact_in_vocab(tag)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[tag] = found
        return found  # type: ignore[return-value]

    def _exact_in_vocab(self, tag: object) -> str | None:
        wnid = self.exact_labels().resolve(tag)
        return wnid if wnid in self._vocab_set else None

    def canonical_many(self, tags: Iterable[object]) -> list[str | None]:
        """`canonical` over many tags; a repeated tag costs one dict lookup."""
        get, slow = self._memo.get, self.canonical
        try:
            return [r if (r := get(t, _MISS)) is not _MISS else slow(t) for t in tags]
        except TypeError:  # an unhashable item somewhere: fall back to the careful path
            return [self.canonical(t) for t in tags]

    def explain(self, tag: object) -> Match:
        """Why a tag resolved the way it did, with every candidate sense and its score parts
        (slow: for humans and audits, not the hot path)."""
        form = normalise_tag(tag)
        if form is None:
            return Match(tag, None, None, None, "not a word")
        rows = self._forms.filter(pc.equal(self._forms.column("form"), form)).to_pylist()
        if not rows:
            if looks_exact(tag) and (wnid := self.exact_labels().resolve(tag)) is not None:
                if wnid not in self._vocab_set:
                    return Match(tag, form, None, None, "not in vocabulary", n_senses=1)
                return Match(tag, form, wnid, self._names[wnid], "exact label", n_senses=1,
                             n_in_vocab=1, decided_by="exact label")  # fmt: skip
            return Match(tag, form, None, None, "not in WordNet")
        candidates = tuple(self._candidate(r) for r in rows)
        in_vocab = [r for r in rows if r["wnid"] in self._vocab_set]
        if not in_vocab:
            return Match(tag, form, None, None, "not in vocabulary", n_senses=len(rows),
                         candidates=candidates)  # fmt: skip
        chosen = self._form_to_wnid[form]
        best = next((r for r in in_vocab if r["wnid"] == chosen), None)
        override = self._overrides.get(form)
        if override is not None:
            decided_by = f"override {override.source}" + (
                f" ({override.reason})" if override.reason else ""
            )
        elif len(in_vocab) == 1:
            decided_by = "only sense in vocabulary"
        else:
            runner_up = in_vocab[1]
            decided_by = (
                f"visual score {in_vocab[0]['score']:.2f} over "
                f"{self._names[runner_up['wnid']]} {runner_up['score']:.2f}"
            )
        return Match(
            tag,
            form,
            chosen,
            self._names[chosen],
            "override" if best is None else "lemma" if best["kind"] == LEMMA else "inflection",
            lemma=None if best is None else best["lemma"],
            sense_rank=None if best is None else best["sense_rank"],
            n_senses=len(rows),
            n_in_vocab=len(in_vocab),
            decided_by=decided_by,
            candidates=candidates,
        )

    def _candidate(self, row: dict) -> dict:
        """One candidate sense of a form: what it is and each part of its score."""
        synset = self._synset_row(row["wnid"])  # one filter of the synsets table (slow path)
        facts = SynsetFacts(
            synset["lexname"], synset["instance"], synset["produce"], synset["photo_count"]
        )
        return {
            "wnid": row["wnid"],
            "name": synset["wn_name"],
            "lexname": facts.lexname,
            "kind": "lemma" if row["kind"] == LEMMA else "inflection",
            "sense_rank": row["sense_rank"],
            "in_vocab": row["wnid"] in self._vocab_set,
            "score": round(float(row["score"]), 2),
            "parts": {
                k: round(v, 2)
                for k, v in score_parts(facts, row["kind"], row["sense_rank"]).items()
            },
        }

    def _synset_row(self, wnid: str) -> dict:
        table = self._synsets.filter(pc.equal(self._synsets.column("wnid"), wnid))
        if table.num_rows != 1:
            raise KeyError(f"{wnid!r} is not a WordNet 3.0 noun synset id")
        return table.to_pylist()[0]

    def stats(self) -> dict[str, int | str]:
        forms = self._forms
        per_form = pc.value_counts(forms.column("form")).field("counts")
        return {
            "vocabulary": self.vocab_name,
            "synsets_in_vocabulary": len(self),
            "forms_in_vocabulary": len(self._form_to_wnid),
            "wordnet_noun_synsets": len(self._names),
            "wordnet_forms": len(per_form),
            "ambiguous_forms": int(pc.sum(pc.greater(per_form, 1)).as_py() or 0),
            "inflection_rows": int(pc.sum(pc.equal(forms.column("kind"), 1)).as_py() or 0),
            "forms_decided_by_overrides": len(self._overrides),
        }


def load_lexicon(
    vocab: str | Iterable[str] = "nouns",
    *,
    counts: Mapping[str, int] | None = None,
    lexicon_dir: str | os.PathLike[str] | None = None,
    wordnet_dir: str | os.PathLike[str] | None = None,
    sense_overrides: str | os.PathLike[str] | None = None,
    shipped_overrides: bool = True,
) -> Lexicon:
    """Load (compiling on first use) the lexicon restricted to a vocabulary.

    `vocab`: "in1k", "in21k", "nouns", "top:K" (needs `counts`, wnid -> images), or an
    iterable of wnids.
    `lexicon_dir`: a compiled lexicon folder (from `weakly lexicon build --out`); workers on a
    cluster without WordNet load that instead of compiling.
    `sense_overrides`: a hashtag,synset[,reason] CSV whose rows beat the visual sense choice
    and the shipped overrides; `shipped_overrides=False` leaves out the shipped table (to
    measure the heuristic alone).
    """
    folder = (
        Path(lexicon_dir) if lexicon_dir is not None else build_lexicon(wordnet_dir=wordnet_dir)
    )
    forms, synsets = read_tables(folder)
    vocabulary = resolve_vocabulary(vocab, synsets.column("wnid").to_pylist(), counts)
    name = vocab if isinstance(vocab, str) else f"custom:{len(vocabulary)}"
    exact = ExactLabels(forms, synsets)
    tables = [read_overrides(SHIPPED_OVERRIDES, exact, SHIPPED_LABEL)] if shipped_overrides else []
    if sense_overrides is not None:
        tables.append(read_overrides(sense_overrides, exact))
    return Lexicon(forms, synsets, vocabulary, name, merge_overrides(*tables), exact)
