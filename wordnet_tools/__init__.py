"""WordNet canonicalisation: raw hashtags -> WordNet 3.0 noun synset ids (`n02132136`)."""

from .lexicon import Lexicon, Match, load_lexicon
from .locate import WordNetNotFound, locate_wordnet, open_wordnet
from .normalise import normalise_tag
from .store import build_lexicon
from .vocab import in1k_synsets, in21k_synsets, top_k_vocabulary

__all__ = [
    "Lexicon",
    "Match",
    "WordNetNotFound",
    "build_lexicon",
    "in1k_synsets",
    "in21k_synsets",
    "load_lexicon",
    "locate_wordnet",
    "normalise_tag",
    "open_wordnet",
    "top_k_vocabulary",
]
