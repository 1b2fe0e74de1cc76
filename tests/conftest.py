"""Shared fixtures.

The lexicon is the one `build_lexicon()` keeps in the weakly cache, keyed by builder version and
WordNet source: compiled from real WordNet 3.0 the first time, reused by every later session
(test_wordnet_locate.py compiles one from scratch in an isolated cache, so the compiler itself
stays tested). Tests only read it; the session checks at teardown that none changed it.
"""

from __future__ import annotations

import pytest

from weakly.fixtures import build_fixture
from wordnet_tools import build_lexicon, load_lexicon


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="session")
def lexicon_dir():
    folder = build_lexicon()
    before = _snapshot(folder)
    yield folder
    assert _snapshot(folder) == before, f"a test modified the shared lexicon in {folder}"


@pytest.fixture(scope="session")
def nouns_lexicon(lexicon_dir):
    return load_lexicon("nouns", lexicon_dir=lexicon_dir)


@pytest.fixture(scope="session")
def in1k_lexicon(lexicon_dir):
    return load_lexicon("in1k", lexicon_dir=lexicon_dir)


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for every test that runs ingest in this process."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="session")
def fixture_dataset(tmp_path_factory):
    """`fixture_dataset(**build_fixture_kwargs)`: one `build_fixture` dataset per distinct set of
    arguments for the whole session, shared by the tests that only read it (a test that changes
    a dataset copies it first). The session checks at teardown that none was changed."""
    built: dict[tuple, tuple] = {}

    def get(**kwargs):
        key = tuple(sorted(kwargs.items()))
        if key not in built:
            root = build_fixture(tmp_path_factory.mktemp("shared-ds") / "ds", **kwargs)
            built[key] = (root, _snapshot(root))
        return built[key][0]

    yield get
    for root, before in built.values():
        assert _snapshot(root) == before, f"a test modified the shared dataset {root}"
