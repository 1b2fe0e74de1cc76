"""Exact labels: a tag that is a synset id (`n02012849`) or a WordNet name (`crane.n.05`).

Curated datasets label with ids or names, not hashtags, and some synsets can be named by no
word that prefers them (the crane bird, the dancer's maillot), so an exact label is taken as
that synset. A name `lemma.n.NN` means what NLTK's `wn.synset()` means by it: the NN-th noun
sense of the lemma in WordNet's order (`crane.n.05` is the bird, `sofa.n.01` the couch, whose
canonical name is `sofa.n.01` too). Exact labels are checked only when the tag is not a word
(the slow path, once per distinct tag: the memo remembers the answer).
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from .compile import LEMMA
from .normalise import normalise_tag

_WNID = re.compile(r"^#?\s*(n\d{8})$", re.IGNORECASE)
_NAME = re.compile(r"^#?\s*(?P<lemma>.+)\.n\.(?P<number>\d{1,3})$", re.IGNORECASE)


def _text(tag: object) -> str | None:
    if isinstance(tag, bytes | bytearray):
        try:
            return bytes(tag).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return tag if isinstance(tag, str) and len(tag) <= 200 else None


def looks_exact(tag: object) -> bool:
    """Cheap test before any parsing: could this tag be a wnid or a WordNet name?"""
    text = _text(tag)
    if text is None:
        return False
    text = text.strip()
    return bool(_WNID.match(text)) or ".n." in text.lower()


class ExactLabels:
    """Resolves wnids and WordNet names against one compiled lexicon (built on first use)."""

    def __init__(self, forms: pa.Table, synsets: pa.Table):
        wnids = synsets.column("wnid").to_pylist()
        self._wnids = frozenset(wnids)
        self._by_name = dict(zip(synsets.column("wn_name").to_pylist(), wnids, strict=True))
        self._forms = forms
        self._by_sense: dict[tuple[str, int], str] | None = None  # built on first use

    def _senses(self) -> dict[tuple[str, int], str]:
        """(lemma form, sense rank) -> wnid, for names other than a synset's canonical one."""
        if self._by_sense is None:
            forms = self._forms
            lemmas = forms.filter(pc.equal(forms.column("kind"), LEMMA))
            self._by_sense = {}
            for form, rank, wnid in zip(
                lemmas.column("form").to_pylist(),
                lemmas.column("sense_rank").to_pylist(),
                lemmas.column("wnid").to_pylist(),
                strict=True,
            ):
                self._by_sense.setdefault((form, rank), wnid)
        return self._by_sense

    def resolve(self, tag: object) -> str | None:
        """The synset a wnid or WordNet-name tag names, or None (also for unknown ones)."""
        text = _text(tag)
        if text is None:
            return None
        text = text.strip()
        if match := _WNID.match(text):
            wnid = match.group(1).lower()
            return wnid if wnid in self._wnids else None
        if match := _NAME.match(text):
            name = text.lstrip("#").strip().lower()
            if name in self._by_name:
                return self._by_name[name]
            form = normalise_tag(match.group("lemma"))
            number = int(match.group("number"))
            if form is not None and number >= 1:
                return self._senses().get((form, number - 1))
        return None
