"""The compiled lexicon on disk: two parquet files in a folder named by its cache key.

The key covers the builder version and a fingerprint of the WordNet files, so a different
WordNet copy or a changed compiler never reuses a stale table. Written to a temporary folder and
renamed, so a killed build never leaves a half table that later loads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .compile import BUILDER_VERSION, compile_tables
from .locate import REQUIRED_VERSION, WordNetSource, cache_dir, locate_wordnet, open_wordnet

FORMS_FILE, SYNSETS_FILE = "forms.parquet", "synsets.parquet"
# What a Lexicon reads of the synsets table (glosses only when a caller asks for them).
LEXICON_SYNSET_COLUMNS = (
    "wnid",
    "name",
    "wn_name",
    "lexname",
    "instance",
    "produce",
    "photo_count",
)


def wordnet_fingerprint(source: WordNetSource) -> str:
    """A short digest of WordNet's noun index, read the way NLTK would find it."""
    digest = hashlib.sha256()
    if source.path.is_dir():
        digest.update((source.path / "index.noun").read_bytes())
    else:  # NLTK's wordnet.zip
        import zipfile

        with zipfile.ZipFile(source.path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/index.noun"))
            digest.update(archive.read(name))
    return digest.hexdigest()[:16]


def lexicon_key(source: WordNetSource) -> str:
    return f"lexicon-b{BUILDER_VERSION}-wn{REQUIRED_VERSION}-{wordnet_fingerprint(source)}"


def default_lexicon_dir(wordnet_dir: str | os.PathLike[str] | None = None) -> Path:
    return cache_dir() / lexicon_key(locate_wordnet(wordnet_dir))


def build_lexicon(
    out: str | os.PathLike[str] | None = None,
    wordnet_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Compile the lexicon into `out` (default: the cache) unless it is already there."""
    target = Path(out) if out is not None else default_lexicon_dir(wordnet_dir)
    if not force and (target / SYNSETS_FILE).exists() and (target / FORMS_FILE).exists():
        return target
    reader, _ = open_wordnet(wordnet_dir)
    forms, synsets = compile_tables(reader)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(forms, tmp / FORMS_FILE)
    pq.write_table(synsets, tmp / SYNSETS_FILE)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def read_tables(
    folder: str | os.PathLike[str], synset_columns: tuple[str, ...] = LEXICON_SYNSET_COLUMNS
) -> tuple[pa.Table, pa.Table]:
    """The forms table and the synset columns asked for (glosses only when a caller wants them)."""
    folder = Path(folder)
    missing = [n for n in (FORMS_FILE, SYNSETS_FILE) if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a compiled lexicon (missing {', '.join(missing)}); "
            "run 'weakly lexicon build'"
        )
    forms = pq.read_table(folder / FORMS_FILE)
    if "score" not in forms.column_names:
        raise FileNotFoundError(
            f"{folder} holds a lexicon compiled by an older weakly (no visual sense scores); "
            f"rebuild it: weakly lexicon build --force --out {folder}"
        )
    return forms, pq.read_table(folder / SYNSETS_FILE, columns=list(synset_columns))
