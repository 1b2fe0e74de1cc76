"""Shared fixtures. The lexicon is compiled once per test session from real WordNet 3.0."""

from __future__ import annotations

import pytest

from wordnet_tools import build_lexicon, load_lexicon


@pytest.fixture(scope="session")
def lexicon_dir(tmp_path_factory):
    return build_lexicon(out=tmp_path_factory.mktemp("lexicon") / "lexicon")


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
