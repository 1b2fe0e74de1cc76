"""Canonicalisation against real WordNet 3.0: synonym merges, morphology, ambiguity, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wordnet_tools import load_lexicon, normalise_tag, open_wordnet, top_k_vocabulary
from wordnet_tools.vocab import IN1K_FILE, resolve_vocabulary

BROWN_BEAR = "n02132136"


@pytest.mark.parametrize(
    "tags, wnid",
    [
        (
            ["#brownbear", "#ursusarctos", "brown-bear", "Brown Bear", "#BrownBear", "brown_bear"],
            BROWN_BEAR,
        ),
        (["couch", "#sofa", "#Sofas", "couches", "lounge"], "n04256520"),
        (["car", "#automobile", "#Cars", "auto", "motorcar"], "n02958343"),
        (["plane", "#aeroplane", "airplane", "#Airplanes"], "n02691156"),
        (["goose", "geese", "#Geese"], "n01855672"),
        (["mouse", "mice"], "n02330245"),
        (["brownbears", "#BROWNBEARS"], BROWN_BEAR),
    ],
)
def test_synonyms_and_inflections_merge(nouns_lexicon, tags, wnid):
    assert nouns_lexicon.canonical_many(tags) == [wnid] * len(tags)


def test_full_width_and_ligature_forms_fold(nouns_lexicon):
    assert nouns_lexicon.canonical("＃ＢｒｏｗｎＢｅａｒ") == BROWN_BEAR  # full-width, NFKC


def test_names_and_membership(nouns_lexicon, in1k_lexicon):
    assert nouns_lexicon.name(BROWN_BEAR) == "brown_bear"
    assert BROWN_BEAR in in1k_lexicon and "n02958343" not in in1k_lexicon
    assert "n02958343" in nouns_lexicon
    assert len(in1k_lexicon) == 1000
    assert len(nouns_lexicon) == 82115  # every noun synset of WordNet 3.0
    with pytest.raises(KeyError, match="not a WordNet 3.0 noun synset"):
        nouns_lexicon.name("n99999999")


def test_in1k_vocabulary_is_the_imagenet_list(in1k_lexicon):
    ids = IN1K_FILE.read_text().split()
    assert set(in1k_lexicon.vocabulary) == set(ids)
    timm_info = pytest.importorskip("timm").__file__
    shipped = Path(timm_info).parent / "data" / "_info" / "imagenet_synsets.txt"
    assert shipped.read_text().split() == ids


def test_in1k_has_about_one_and_a_half_thousand_hashtags(in1k_lexicon):
    lemma_forms = {m.form for m in map(in1k_lexicon.explain, _in1k_lemma_forms(in1k_lexicon))}
    assert 1300 <= len(lemma_forms) <= 2200


def _in1k_lemma_forms(lex):
    import pyarrow as pa
    import pyarrow.compute as pc

    forms = lex._forms
    rows = forms.filter(
        pc.and_(pc.is_in(forms["wnid"], pa.array(lex.vocabulary)), pc.equal(forms["kind"], 0))
    )
    return sorted(set(rows["form"].to_pylist()))


def test_ambiguity_prefers_the_only_sense_in_the_vocabulary(nouns_lexicon, in1k_lexicon):
    # "plane": most frequent sense is the aircraft; IN-1k only has the carpenter's plane.
    assert nouns_lexicon.canonical("plane") == "n02691156"
    assert in1k_lexicon.canonical("plane") == "n03954731"
    assert in1k_lexicon.explain("plane").n_in_vocab == 1


@pytest.fixture(scope="module")
def reader():
    """One NLTK WordNet reader for the tests that ask WordNet itself (they only read it)."""
    return open_wordnet()[0]


def test_ambiguity_among_vocabulary_senses_follows_the_visual_score(reader, lexicon_dir):
    senses = [f"n{lem.synset().offset():08d}" for lem in reader.lemmas("crane", "n")]
    bird, machine = "n02012849", "n03126707"
    assert bird in senses and machine in senses and senses[0] not in (bird, machine)
    lex = load_lexicon([bird, machine], lexicon_dir=lexicon_dir)
    match = lex.explain("crane")
    assert match.n_in_vocab == 2 and lex.canonical("#crane") == match.wnid
    scores = {c["wnid"]: c["score"] for c in match.candidates}
    assert scores[match.wnid] == max(scores[bird], scores[machine])
    # With every noun in the vocabulary WordNet's first sense (Stephen Crane) no longer wins.
    nouns = load_lexicon("nouns", lexicon_dir=lexicon_dir)
    assert nouns.canonical("crane") in (bird, machine)


def test_lemma_beats_inflection_but_inflection_serves_other_vocabularies(reader, lexicon_dir):
    spectacles = f"n{reader.synsets('spectacles', 'n')[0].offset():08d}"
    glass_vessel = f"n{reader.lemmas('glass', 'n')[0].synset().offset():08d}"
    both = load_lexicon([spectacles, glass_vessel], lexicon_dir=lexicon_dir)
    assert both.canonical("glasses") == spectacles
    assert both.explain("glasses").how == "lemma"
    only_glass = load_lexicon([glass_vessel], lexicon_dir=lexicon_dir)
    assert only_glass.canonical("glasses") == glass_vessel
    assert only_glass.explain("glasses").how == "inflection"


BAD_TAGS = [
    "", " ", "   \t\n", "#", "##", None, b"\xff\xfe\xfa", b"", "x" * 10_000, "🐻🐻🐻",
    "#🔥💯", "2024", "#12345", "猫cat", "кот🐱", 12, 3.5, ["cat"], {"a": 1}, object(),
    "cat" * 400,
]  # fmt: skip


@pytest.mark.parametrize("tag", BAD_TAGS, ids=lambda t: repr(t)[:20])
def test_bad_input_returns_none(nouns_lexicon, tag):
    assert nouns_lexicon.canonical(tag) is None


def test_canonical_many_with_mixed_bad_items(nouns_lexicon):
    tags = ["#BrownBear", None, ["x"], b"\xff", "sofa", "#BrownBear"]
    assert nouns_lexicon.canonical_many(tags) == [
        BROWN_BEAR,
        None,
        None,
        None,
        "n04256520",
        BROWN_BEAR,
    ]


def test_utf8_bytes_tags_are_decoded(nouns_lexicon):
    assert nouns_lexicon.canonical(b"#BrownBear") == BROWN_BEAR


def test_memo_does_not_change_answers(nouns_lexicon):
    tags = ["#Cats", "cats", "CATS", "#cat"] * 3
    first = nouns_lexicon.canonical_many(tags)
    again = [nouns_lexicon.canonical(t) for t in tags]
    assert first == again and len(set(first)) == 1 and first[0] is not None


def test_lexicon_pickles_for_ray_workers(in1k_lexicon):
    clone = pickle.loads(pickle.dumps(in1k_lexicon))
    assert clone.canonical("#BrownBear") == BROWN_BEAR and len(clone) == 1000


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
@settings(max_examples=300, deadline=None)
def test_canonical_never_raises(nouns_lexicon, tag):
    result = nouns_lexicon.canonical(tag)
    assert result is None or result in nouns_lexicon


@given(st.text(max_size=100))
@settings(max_examples=300, deadline=None)
def test_normalise_is_idempotent_and_alphanumeric(tag):
    form = normalise_tag(tag)
    if form is not None:
        assert normalise_tag(form) == form
        assert form.isalnum() and not form.isdigit() and form == form.casefold()


def test_top_k_vocabulary_is_deterministic():
    counts = {"n00000003": 5, "n00000001": 9, "n00000002": 5, "n00000004": 1, "n00000005": 0}
    assert top_k_vocabulary(counts, 2) == ("n00000001", "n00000002")
    assert top_k_vocabulary(counts, 10) == ("n00000001", "n00000002", "n00000003", "n00000004")
    with pytest.raises(ValueError):
        top_k_vocabulary(counts, 0)


def test_top_k_lexicon_from_counts(lexicon_dir):
    counts = {BROWN_BEAR: 50, "n04256520": 40, "n02958343": 3}
    lex = load_lexicon("top:2", counts=counts, lexicon_dir=lexicon_dir)
    assert lex.vocabulary == ("n02132136", "n04256520")
    assert lex.canonical("car") is None and lex.canonical("couch") == "n04256520"


def test_vocabulary_errors_are_clear(lexicon_dir):
    with pytest.raises(ValueError, match="in1k, in21k, nouns, or top:K"):
        load_lexicon("top:many", lexicon_dir=lexicon_dir)
    with pytest.raises(ValueError, match="needs corpus counts"):
        load_lexicon("top:5", lexicon_dir=lexicon_dir)
    with pytest.raises(ValueError, match="not WordNet 3.0 noun synsets"):
        resolve_vocabulary(["n02132136", "v01234567", "bear"], ["n02132136"])


def test_control_characters_and_punctuation_are_dropped(nouns_lexicon):
    tags = ["\x00cat", "#cat!!!", "c.a.t", "🐱cat🐱"]
    assert nouns_lexicon.canonical_many(tags) == ["n02121620"] * 4
