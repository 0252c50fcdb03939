"""``python -m rsna_lumbar`` is the ``rsna-lumbar`` command."""

import sys

from rsna_lumbar.cli import main

if __name__ == "__main__":
    sys.exit(main())
