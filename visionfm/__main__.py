"""``python -m visionfm``: the same CLI as the ``visionfm`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
