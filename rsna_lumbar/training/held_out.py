"""Out-of-fold logits of a trained model folder on *another* crop cache.

``rsna-lumbar train`` predicts each fold's held-out studies on the crops it trained from, which
are centred on the labelled points. At inference the crops are centred on the localiser's
points instead, so a calibration fitted on the training crops is fitted on easier inputs than
the ones it will scale. :func:`held_out_logits` re-predicts every study of ``folds.csv`` with
the fold model that did not train on it, on a cache built from other points — e.g. ``rsna-lumbar
crops`` over the localiser's out-of-fold points of the training studies — so that ``rsna-lumbar
report --crops`` scores and calibrates on what inference will see.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import torch

from rsna_lumbar.crops.cache import CropCache
from rsna_lumbar.folds import read_folds
from rsna_lumbar.models.dataset import StudyDataset, labels_by_study
from rsna_lumbar.models.folder import build_network, check_crop_geometry, read_description
from rsna_lumbar.models.forward import predict_logits
from rsna_lumbar.models.predictor import Mirrored, mirrored_pass
from rsna_lumbar.models.weights import load_weights
from rsna_lumbar.training.config import load_config
from rsna_lumbar.training.loop import fold_priors, resolved_spec
from rsna_lumbar.training.oof import oof_frame

LOGGER = logging.getLogger(__name__)


def held_out_logits(model_dir: str | os.PathLike, crops: str | os.PathLike,
                    train: pd.DataFrame, device: str = "cpu", tta: bool = False) -> pd.DataFrame:  # fmt: skip
    """OOF rows (:func:`~rsna_lumbar.training.oof.oof_frame` schema) of ``model_dir`` on ``crops``.

    Each study of a trained fold (``fold_k/model.safetensors``; ``train.folds`` may train only
    some) is predicted by the model of its own fold, which did not train on it, without
    augmentation; studies absent from ``crops`` get the fold's training priors with
    ``predicted = 0``, as in training. ``tta``: as ``predict --tta`` does, the logits of the
    families with a mirror axis (the canal) are averaged with those of the mirrored crops (for
    a level model, of the whole mirrored patient: :func:`rsna_lumbar.models.predictor.mirrored_pass`).

    Raises:
        FileNotFoundError: the folder lacks ``config.yaml``/``model.json``/``folds.csv`` or any
            fold's weights, or ``crops`` is not a crop cache; the message says what to run.
        ValueError: ``crops`` was cut at another crop geometry than the model trained at.
    """
    model_dir = Path(model_dir)
    for name in ("config.yaml", "model.json", "folds.csv"):
        if not (model_dir / name).is_file():
            msg = f"{model_dir / name} not found: run 'rsna-lumbar train --out {model_dir}' first"
            raise FileNotFoundError(msg)
    config = load_config(str(model_dir / "config.yaml"), [], saved=True)
    description = read_description(model_dir)
    spec = resolved_spec(config)
    folds = read_folds(model_dir / "folds.csv")
    labels = labels_by_study(train)
    cache = CropCache(crops, keep_in_memory=False)
    check_crop_geometry(description, cache.geometry, str(crops))
    in_cache = set(cache.study_ids)
    trained = [int(f) for f in sorted(folds.fold.unique())
               if (model_dir / f"fold_{int(f)}" / "model.safetensors").is_file()]  # fmt: skip
    if not trained:
        msg = f"{model_dir} has no fold_*/model.safetensors: finish 'rsna-lumbar train' first"
        raise FileNotFoundError(msg)
    frames = []
    for fold in trained:
        weights = model_dir / f"fold_{fold}" / "model.safetensors"
        members = [int(s) for s in folds.loc[folds.fold == fold, "study_id"]]
        present = [s for s in members if s in in_cache]
        missing = [s for s in members if s not in in_cache]
        if missing:
            LOGGER.warning("fold %d: %d of %d studies have no crops in %s; their rows are priors",
                           fold, len(missing), len(members), crops)  # fmt: skip
        network = build_network(description)
        load_weights(network, weights)
        context = bool(description.get("level_context", False))  # as the network was built
        dataset = StudyDataset(cache, present, labels, families=config.data.families,
                               views=config.data.views, slices=spec.slices, size=spec.size,
                               level_context=context)  # fmt: skip
        studies, outputs = predict_logits(network, dataset, torch.device(device),
                                          config.train.eval_batch_size)  # fmt: skip
        fed, averaged = mirrored_pass(config.data.families, config.data.views, context) if tta else ((), ())
        if fed:
            mirrored = StudyDataset(Mirrored(cache), present, None, families=fed,
                                    views=config.data.views, slices=spec.slices, size=spec.size)
            order, flipped = predict_logits(network, mirrored, torch.device(device),
                                            config.train.eval_batch_size)  # fmt: skip
            assert list(order) == list(studies), "the mirrored pass predicted other studies"
            for f in averaged:
                outputs[f] = ((outputs[f][0] + flipped[f][0]) / 2, outputs[f][1])
        train_ids = [int(s) for s in folds.loc[folds.fold != fold, "study_id"] if int(s) in labels]
        priors = fold_priors(labels, train_ids)
        frames.append(oof_frame(fold, studies, outputs, priors, labels, missing))
        LOGGER.info("fold %d: %d studies predicted on %s", fold, len(studies), crops)
    return pd.concat(frames).sort_values("row_id", kind="stable").reset_index(drop=True)
