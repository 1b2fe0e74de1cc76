"""The Lexicon: raw tag -> canonical WordNet synset id, for one vocabulary.

Resolution is decided once at load time, so `canonical` is a memoised dict lookup. A form that
names several synsets resolves to the one in the vocabulary if only one is; otherwise to the
form's most frequent sense among those in the vocabulary (lemma matches before inflections,
then WordNet's sense order, then wnid), so the choice is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .compile import LEMMA
from .normalise import normalise_tag
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
    how: str  # "lemma", "inflection", "not a word", "not in WordNet", "not in vocabulary"
    lemma: str | None = None
    sense_rank: int | None = None
    n_senses: int = 0  # synsets the form names in all of WordNet
    n_in_vocab: int = 0  # of those, how many are in this vocabulary


class Lexicon:
    """Canonicalises tags into one vocabulary. Picklable, so Ray workers receive a copy."""

    def __init__(
        self, forms: pa.Table, synsets: pa.Table, vocabulary: Sequence[str], vocab_name: str
    ):
        self.vocab_name = vocab_name
        self.vocabulary: tuple[str, ...] = tuple(vocabulary)
        self._vocab_set = frozenset(self.vocabulary)
        self._forms = forms
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
        self._memo: dict[object, str | None] = {}
        self._all_forms: frozenset[str] | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_memo"] = {}
        state["_all_forms"] = None
        return state

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
        return form is not None and form in self._all_forms

    def canonical(self, tag: object) -> str | None:
        """The tag's synset id in this vocabulary, or None. Never raises on any input."""
        try:
            found = self._memo.get(tag, _MISS)
        except TypeError:  # unhashable input (a list, a dict): not a tag
            return None
        if found is _MISS:
            form = normalise_tag(tag)
            found = None if form is None else self._form_to_wnid.get(form)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[tag] = found
        return found  # type: ignore[return-value]

    def canonical_many(self, tags: Iterable[object]) -> list[str | None]:
        """`canonical` over many tags; a repeated tag costs one dict lookup."""
        get, slow = self._memo.get, self.canonical
        try:
            return [r if (r := get(t, _MISS)) is not _MISS else slow(t) for t in tags]
        except TypeError:  # an unhashable item somewhere: fall back to the careful path
            return [self.canonical(t) for t in tags]

    def explain(self, tag: object) -> Match:
        """Why a tag resolved the way it did (slow: for humans and audits, not the hot path)."""
        form = normalise_tag(tag)
        if form is None:
            return Match(tag, None, None, None, "not a word")
        rows = self._forms.filter(pc.equal(self._forms.column("form"), form)).to_pylist()
        if not rows:
            return Match(tag, form, None, None, "not in WordNet")
        in_vocab = [r for r in rows if r["wnid"] in self._vocab_set]
        if not in_vocab:
            return Match(tag, form, None, None, "not in vocabulary", n_senses=len(rows))
        best = in_vocab[0]
        return Match(
            tag,
            form,
            best["wnid"],
            self._names[best["wnid"]],
            "lemma" if best["kind"] == LEMMA else "inflection",
            lemma=best["lemma"],
            sense_rank=best["sense_rank"],
            n_senses=len(rows),
            n_in_vocab=len(in_vocab),
        )

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
        }


def load_lexicon(
    vocab: str | Iterable[str] = "nouns",
    *,
    counts: Mapping[str, int] | None = None,
    lexicon_dir: str | os.PathLike[str] | None = None,
    wordnet_dir: str | os.PathLike[str] | None = None,
) -> Lexicon:
    """Load (compiling on first use) the lexicon restricted to a vocabulary.

    `vocab`: "in1k", "nouns", "top:K" (needs `counts`, wnid -> images), or an iterable of wnids.
    `lexicon_dir`: a compiled lexicon folder (from `weakly lexicon build --out`); workers on a
    cluster without WordNet load that instead of compiling.
    """
    folder = (
        Path(lexicon_dir) if lexicon_dir is not None else build_lexicon(wordnet_dir=wordnet_dir)
    )
    forms, synsets = read_tables(folder)
    vocabulary = resolve_vocabulary(vocab, synsets.column("wnid").to_pylist(), counts)
    name = vocab if isinstance(vocab, str) else f"custom:{len(vocabulary)}"
    return Lexicon(forms, synsets, vocabulary, name)
