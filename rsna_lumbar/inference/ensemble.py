"""The ensemble manifest: which model folders predict, with what weight, and which localiser.

``MODELS/ensemble.yaml`` (all keys optional)::

    members:                 # severity model folders (relative to MODELS), averaged by weight
      - {path: severity_default, weight: 1.0}
    localizer: localizer     # learned localiser folder used for splits without label points
    tta: false               # test-time augmentation: each member also grades the mirrored
                             # canal crops (rsna_lumbar.crops.recipes.mirror_axis), averaged

Without the file, every sub-folder holding a ``model.json`` is a member with weight 1 and a
``localizer/`` sub-folder is the localiser. Members are listed in the order they should be
*kept* when the time budget forces shedding (the first is shed last).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml

MANIFEST = "ensemble.yaml"
_KEYS = {"members", "localizer", "tta"}


@dataclasses.dataclass(frozen=True)
class Member:
    path: Path
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Ensemble:
    members: tuple[Member, ...]
    localizer: Path | None
    tta: bool = False


def read_ensemble(models: str | os.PathLike) -> Ensemble:
    """Read ``MODELS/ensemble.yaml`` or discover members; raises ``ValueError`` on unknown keys."""
    models = Path(models)
    manifest = models / MANIFEST
    if manifest.is_file():
        payload = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
        unknown = set(payload) - _KEYS
        if unknown:
            msg = f"{manifest}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}"
            raise ValueError(msg)
        members = []
        for entry in payload.get("members", []):
            if set(entry) - {"path", "weight"} or "path" not in entry:
                msg = f"{manifest}: member {entry} must have 'path' and optionally 'weight'"
                raise ValueError(msg)
            members.append(Member(models / entry["path"], float(entry.get("weight", 1.0))))
        localizer = payload.get("localizer")
        tta = payload.get("tta", False)
        if not isinstance(tta, bool):
            raise ValueError(f"{manifest}: tta is true or false, got {tta!r}")
        return Ensemble(tuple(members), models / localizer if localizer else None, tta)
    members = tuple(Member(p.parent) for p in sorted(models.glob("*/model.json")))
    localizer = models / "localizer"
    return Ensemble(members, localizer if localizer.is_dir() else None)
