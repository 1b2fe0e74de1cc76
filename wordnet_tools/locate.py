"""Finding WordNet 3.0 on this machine and opening it with NLTK.

Order: an explicit folder (`wordnet_dir` argument or `WEAKLY_WORDNET`), NLTK's own data
(`nltk.download('wordnet')`), then Debian/Ubuntu's `wordnet-base` + `wordnet-sense-index`
under `/usr/share/wordnet`. NLTK only opens corpora that sit under one of its data roots and
that carry a `lexnames` file, which Debian does not ship; such folders are copied once into
`<cache>/nltk_data/corpora/wordnet` with `lexnames` written beside them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
REQUIRED_VERSION = "3.0"
_NOUN_FILES = ("index.noun", "data.noun", "noun.exc")
_LEXNAME_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetNotFound(RuntimeError):
    """WordNet 3.0 could not be found or opened; the message says how to provide it."""


def _missing_message(detail: str) -> str:
    return (
        f"WordNet 3.0 not found ({detail}). Provide it in one of three ways: "
        "(1) pass --wordnet-dir DIR or set WEAKLY_WORDNET=DIR to a WordNet 3.0 'dict' folder; "
        "(2) python -c \"import nltk; nltk.download('wordnet')\" on a machine with internet; "
        "(3) sudo apt-get install wordnet-base wordnet-sense-index (Debian/Ubuntu)."
    )


def cache_dir() -> Path:
    """Where weakly keeps derived files (arranged WordNet, compiled lexicons)."""
    root = os.environ.get("WEAKLY_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weakly"


@dataclass(frozen=True)
class WordNetSource:
    """Where WordNet was found: `nltk_root` is the data root NLTK is pointed at."""

    origin: str  # "explicit", "nltk", or "debian"
    path: Path  # the folder holding index.noun etc., or NLTK's wordnet.zip
    nltk_root: Path  # the data root NLTK is pointed at (put first on nltk.data.path)


def _lexnames_text() -> str:
    names = (Path(__file__).parent / "data" / "lexnames.txt").read_text().split()
    return "".join(
        f"{i:02d}\t{name}\t{_LEXNAME_CATEGORY[name.split('.')[0]]}\n"
        for i, name in enumerate(names)
    )


def nltk_data_roots() -> list[Path]:
    """The folders NLTK searches for data, in its order (NLTK_DATA first).

    Listed here rather than read from `nltk.data.path` because importing NLTK costs about a
    second and 150 MB, which every `load_lexicon` would pay just to find a cached table.
    """
    env = [Path(p).expanduser() for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    prefix = Path(sys.prefix)
    return env + [
        Path.home() / "nltk_data",
        prefix / "nltk_data",
        prefix / "share" / "nltk_data",
        prefix / "lib" / "nltk_data",
        Path("/usr/share/nltk_data"),
        Path("/usr/local/share/nltk_data"),
        Path("/usr/lib/nltk_data"),
        Path("/usr/local/lib/nltk_data"),
    ]


def _is_wordnet_folder(path: Path) -> bool:
    return all((path / name).is_file() for name in _NOUN_FILES)


def _arrange_for_nltk(source: Path) -> Path:
    """Copy a bare WordNet folder into an NLTK data root under the cache; return that root.

    Copies, not symlinks: NLTK resolves links and refuses files outside its roots. The target
    is keyed by the source path so two different WordNet folders never share a copy.
    """
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    root = cache_dir() / "nltk_data" / key
    target = root / "corpora" / "wordnet"
    marker = target / ".complete"
    if marker.exists():
        return root
    tmp = target.with_name(f"wordnet.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copyfile(item, tmp / item.name)
    if not (tmp / "lexnames").exists():
        (tmp / "lexnames").write_text(_lexnames_text())
    (tmp / ".complete").write_text(str(source))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return root


def locate_wordnet(wordnet_dir: str | os.PathLike[str] | None = None) -> WordNetSource:
    """Find WordNet in the documented order; raise WordNetNotFound with the three remedies."""
    explicit = wordnet_dir or os.environ.get("WEAKLY_WORDNET")
    if explicit:
        path = Path(explicit).expanduser()
        for candidate in (path, path / "dict", path / "corpora" / "wordnet"):
            if _is_wordnet_folder(candidate):
                return WordNetSource("explicit", candidate, _arrange_for_nltk(candidate))
        raise WordNetNotFound(_missing_message(f"{path} has no index.noun/data.noun/noun.exc"))
    for root in nltk_data_roots():
        folder, archive = root / "corpora" / "wordnet", root / "corpora" / "wordnet.zip"
        if _is_wordnet_folder(folder) or archive.is_file():
            return WordNetSource("nltk", folder if folder.is_dir() else archive, root)
    if _is_wordnet_folder(DEBIAN_WORDNET_DIR):
        return WordNetSource("debian", DEBIAN_WORDNET_DIR, _arrange_for_nltk(DEBIAN_WORDNET_DIR))
    raise WordNetNotFound(
        _missing_message(f"no WEAKLY_WORDNET, no NLTK wordnet data, no {DEBIAN_WORDNET_DIR}")
    )


def open_wordnet(wordnet_dir: str | os.PathLike[str] | None = None):
    """Return `(reader, source)`: an NLTK WordNetCorpusReader for WordNet 3.0, and where it was."""
    source = locate_wordnet(wordnet_dir)
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if str(source.nltk_root) in nltk.data.path:
        nltk.data.path.remove(str(source.nltk_root))
    nltk.data.path.insert(0, str(source.nltk_root))
    try:
        pointer = nltk.data.find("corpora/wordnet")  # our root comes first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions not available": expected
            reader = WordNetCorpusReader(pointer, None)
    except Exception as exc:  # NLTK raises many types for a broken folder
        raise WordNetNotFound(_missing_message(f"{source.path} could not be read: {exc}")) from None
    version = reader.get_version()
    if version != REQUIRED_VERSION:
        raise WordNetNotFound(
            _missing_message(f"{source.path} is WordNet {version}; synset ids need 3.0")
        )
    return reader, source
