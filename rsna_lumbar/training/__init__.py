"""Training the severity models: config, crop-cache dataset, losses, the fold loop, OOF,
calibration, report and ablation. Composes :mod:`rsna_lumbar.models` with the crop cache."""
