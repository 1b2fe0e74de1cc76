"""`python -m wordnet_tools locate`: used by the Makefile to decide whether to install WordNet."""

import sys

from .cli import locate_main

if __name__ == "__main__":
    if sys.argv[1:] != ["locate"]:
        sys.exit("usage: python -m wordnet_tools locate")
    sys.exit(locate_main())
