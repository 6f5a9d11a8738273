"""``python -m modelpack_registry``: the same as the ``modelpack-registry`` command."""

import sys

from modelpack_registry.cli import main

if __name__ == "__main__":
    sys.exit(main())
