"""The model folder contract: what ``rsna-lumbar train`` writes and the predictor rebuilds from.

::

    FOLDER/model.json                 the network description (:func:`describe`): ``spec`` (every
                                      :class:`~rsna_lumbar.models.registry.ModelSpec` field,
                                      overrides applied), ``families``, ``views`` (family → view
                                      names), ``shared``, ``level_context``, ``context_detached``,
                                      ``classes``, ``format``
    FOLDER/fold_k/model.safetensors   fold ``k``'s weights (:func:`fold_weight_files`)
    FOLDER/calibration.json           per-family temperatures (:func:`save_temperatures`;
                                      absent: no scaling)
    FOLDER/priors.json                class priors (:mod:`rsna_lumbar.priors`), the fallback

:func:`build_network` is the one place a network is built from a description, so a folder
needs neither the registry nor the config that trained it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from rsna_lumbar.atomic import write_text
from rsna_lumbar.crops.recipes import geometry_from_settings, geometry_settings
from rsna_lumbar.models.network import LumbarNet
from rsna_lumbar.models.registry import ModelSpec

DESCRIPTION_FILE = "model.json"
CALIBRATION_FILE = "calibration.json"


def describe(spec: ModelSpec, families, views, shared: bool, crops: dict | None = None,
             level_context: bool = False, context_detached: bool = False) -> dict:
    """The ``model.json`` of a network: everything needed to rebuild it from the folder alone,
    and ``crops``, the crop geometry it was trained at (settings of
    :func:`rsna_lumbar.crops.recipes.geometry_settings`; ``predict`` cuts the same)."""
    description = {"spec": asdict(spec), "families": list(families),
                   "views": {f: list(views[f]) for f in families}, "shared": shared,
                   "level_context": level_context, "context_detached": context_detached,
                   "classes": ["normal_mild", "moderate", "severe"], "format": 1}
    return description if crops is None else {**description, "crops": crops}


def check_crop_geometry(description: dict, geometry: dict, where: str) -> None:
    """Raise ``ValueError`` when the crop cache ``where`` (its ``geometry``) was cut at another
    geometry than the model of ``description`` was trained at (folders that predate the record
    are taken as trained at the default)."""
    trained = geometry_from_settings(description.get("crops") or {})
    if trained != geometry:
        msg = (f"{where} was cut at another crop geometry than the model was trained at "
               f"({geometry_settings(trained)}); cut crops with the model's geometry "
               f"(a recipe's 'crops' section)")
        raise ValueError(msg)


def write_description(folder: str | os.PathLike, description: dict) -> Path:
    """Write ``FOLDER/model.json`` (atomically); returns its path."""
    path = Path(folder) / DESCRIPTION_FILE
    write_text(path, json.dumps(description, indent=1) + "\n")
    return path


def read_description(folder: str | os.PathLike) -> dict:
    """``FOLDER/model.json``.

    Raises:
        FileNotFoundError: it does not exist; the message says how to make a model folder.
    """
    folder = Path(folder)
    path = folder / DESCRIPTION_FILE
    if not path.is_file():
        msg = f"{path} not found: {folder} is not a model folder from 'rsna-lumbar train'"
        raise FileNotFoundError(msg)
    return json.loads(path.read_text(encoding="utf-8"))


def build_network(description: dict, init_file=None) -> LumbarNet:
    """The (untrained) network a ``model.json`` describes; ``init_file``: local backbone
    weights to start training from (:mod:`rsna_lumbar.models.weights`)."""
    return LumbarNet(ModelSpec(**description["spec"]), description["families"],
                     description["views"], shared=description["shared"],
                     level_context=description.get("level_context", False),  # older folders lack it
                     context_detached=description.get("context_detached", False),
                     init_file=init_file)


def fold_weight_files(folder: str | os.PathLike) -> list[Path]:
    """``fold_*/model.safetensors`` of a model folder, by fold number."""
    return sorted(Path(folder).glob("fold_*/model.safetensors"),
                  key=lambda p: int(p.parent.name.split("_")[1]))


def save_temperatures(temperatures: dict[str, float], path: str | os.PathLike) -> None:
    """Write family → temperature (``calibration.json``)."""
    write_text(path, json.dumps({"temperature": temperatures}, indent=1) + "\n")


def load_temperatures(path: str | os.PathLike) -> dict[str, float]:
    """Family → temperature; ``{}`` (no scaling) when the file does not exist."""
    if not os.path.isfile(path):
        return {}
    return {k: float(v) for k, v in json.loads(open(path, encoding="utf-8").read())["temperature"].items()}
