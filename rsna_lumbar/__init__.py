"""rsna-lumbar: lumbar-spine MRI to RSNA 2024 severity grades, offline and geometry-true.

The stages (DICOM → Volume → level points → crops → models → submission) are plain functions in
the sub-packages; ``rsna-lumbar <stage>`` is the command line over them.
"""

import os

# Offline always: no hub downloads, no albumentations update check, in every entry point. The
# one exception is 'rsna-lumbar weights pull', an explicit download: it honours HF_HUB_OFFLINE
# only when the user set it, so what they set (None: unset) is kept here.
HF_HUB_OFFLINE_FROM_USER = os.environ.get("HF_HUB_OFFLINE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
