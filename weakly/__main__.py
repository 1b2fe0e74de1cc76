"""`python -m weakly`: the same as the `weakly` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
