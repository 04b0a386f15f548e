"""``python -m philora`` is the ``philora`` command."""

import sys

from philora.cli import main

if __name__ == "__main__":
    sys.exit(main())
