"""Shared fixtures.

The lexicon is the one `build_lexicon()` keeps in the weakly cache, keyed by builder version and
WordNet source: compiled from real WordNet 3.0 the first time, reused by every later session
(test_wordnet_locate.py compiles one from scratch in an isolated cache, so the compiler itself
stays tested). Tests only read it; the session checks at teardown that none changed it.

The suite runs on two pytest-xdist workers (pyproject.toml's addopts), each its own session:
session fixtures are built once per worker, and the cached lexicon is built under a file lock
so that two workers on a machine with an empty cache never compile it at the same time.
"""

from __future__ import annotations

import fcntl

import pytest

from weakly.fixtures import build_fixture
from wordnet_tools import WordNetNotFound, build_lexicon, load_lexicon
from wordnet_tools.locate import cache_dir

# `s3_server`: a real S3-compatible server (moto) per test module that asks for it.
pytest_plugins = ["s3_server"]


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _cached_lexicon():
    """`build_lexicon()` (the cache, compiled if missing) under an exclusive lock."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lexicon-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_lexicon()


@pytest.fixture(scope="session", autouse=True)
def _lexicon_in_cache():
    """Before any test: the CLI, demo and README tests use the cached lexicon without asking
    for `lexicon_dir`, and must find it built rather than race to build it."""
    try:
        _cached_lexicon()
    except WordNetNotFound:
        pass  # the tests that need WordNet fail with its message; the others still run


@pytest.fixture(scope="session")
def lexicon_dir(_lexicon_in_cache):
    folder = _cached_lexicon()
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
