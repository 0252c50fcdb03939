"""Severity models: the spec registry, the 2.5D network and its inputs, offline weights, the
model folder contract, the batch forward pass, the fold-ensemble predictor.

Imports torch and timm; never reads DICOM.
"""

from rsna_lumbar.models.registry import ModelSpec, get_spec, list_models

__all__ = ["ModelSpec", "get_spec", "list_models", "load_model_folder"]


def load_model_folder(path, device="cpu", folds=None):
    """Fold ensemble of a model folder: ``predict_study(arrays) -> (probs (25, 3), mask (25,))``.

    See :func:`rsna_lumbar.models.predictor.load_model_folder`.
    """
    from rsna_lumbar.models.predictor import load_model_folder as _load

    return _load(path, device=device, folds=folds)
