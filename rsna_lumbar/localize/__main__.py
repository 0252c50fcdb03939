"""``python -m rsna_lumbar.localize``: check which TotalSpineSeg and weights the kit would use."""

import sys

from rsna_lumbar.localize.totalspineseg import main

sys.exit(main())
