"""`python -m train` and `torchrun ... -m train`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
