"""Test-wide settings: offline, no writes outside tmp dirs."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
