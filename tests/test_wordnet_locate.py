"""Finding WordNet: explicit folder, NLTK data, Debian packages, and the missing case."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nltk
import pytest

from wordnet_tools import WordNetNotFound, build_lexicon, locate_wordnet, open_wordnet
from wordnet_tools.locate import DEBIAN_WORDNET_DIR, nltk_data_roots
from wordnet_tools.store import FORMS_FILE, lexicon_key


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A cache of its own and no NLTK data roots, so only what the test provides is found."""
    monkeypatch.setenv("WEAKLY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WEAKLY_WORDNET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(nltk.data, "path", [])
    assert not any((r / "corpora").exists() for r in nltk_data_roots()), "machine has NLTK data"
    return tmp_path


def test_debian_packages_are_arranged_for_nltk(isolated):
    source = locate_wordnet()
    assert source.origin == "debian" and source.path == DEBIAN_WORDNET_DIR
    arranged = source.nltk_root / "corpora" / "wordnet"
    lexnames = (arranged / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[5] == "05\tnoun.animal\t1"
    reader, _ = open_wordnet()
    assert reader.get_version() == "3.0"
    assert reader.synsets("brown_bear", "n")[0].offset() == 2132136


def test_explicit_folder_wins(isolated, monkeypatch):
    copy = isolated / "my-wordnet"
    shutil.copytree(
        DEBIAN_WORDNET_DIR, copy, ignore=shutil.ignore_patterns("bin", "pixmaps", "wnres")
    )
    monkeypatch.setenv("WEAKLY_WORDNET", str(copy))
    assert locate_wordnet().origin == "explicit"
    assert locate_wordnet(DEBIAN_WORDNET_DIR).path == DEBIAN_WORDNET_DIR  # argument beats env


def test_nltk_data_is_used_when_present(isolated, monkeypatch):
    """The layout `nltk.download('wordnet')` leaves behind (a folder under corpora/)."""
    arranged = locate_wordnet().nltk_root  # reuse the Debian copy as a user's NLTK data
    user_data = isolated / "nltk_data"
    shutil.copytree(arranged, user_data)
    monkeypatch.setenv("NLTK_DATA", str(user_data))
    source = locate_wordnet()
    assert source.origin == "nltk" and source.nltk_root == user_data
    reader, _ = open_wordnet()
    assert reader.get_version() == "3.0"


def test_missing_wordnet_names_the_three_ways(isolated, monkeypatch):
    monkeypatch.setenv("WEAKLY_WORDNET", str(isolated / "nowhere"))
    with pytest.raises(WordNetNotFound) as info:
        locate_wordnet()
    message = str(info.value)
    assert "WEAKLY_WORDNET" in message and "nltk.download('wordnet')" in message
    assert "apt-get install wordnet-base wordnet-sense-index" in message


def test_missing_wordnet_cli_is_one_line_no_traceback(tmp_path):
    env = {
        "WEAKLY_WORDNET": str(tmp_path / "nowhere"),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "weakly.cli", "lexicon", "stats"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "WordNet 3.0 not found" in done.stderr


def test_cache_is_keyed_and_reused(isolated):
    first = build_lexicon()
    assert first.name == lexicon_key(locate_wordnet()) and "wn3.0" in first.name
    stamp = (first / FORMS_FILE).stat().st_mtime_ns
    assert build_lexicon() == first
    assert (first / FORMS_FILE).stat().st_mtime_ns == stamp
