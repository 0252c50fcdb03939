"""The training loss is the official metric: weighted CE = group loss, any-severe = metric term."""

import numpy as np
import torch

from rsna_lumbar.metric import any_severe_log_loss, weighted_log_loss
from rsna_lumbar.training.losses import any_severe_parts, loss_parts, metric_loss, weighted_ce_parts


def test_weighted_ce_equals_the_metric_group_loss():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(40, 3)) * 2)
    labels = torch.tensor(rng.integers(0, 3, 40))
    labels[:3] = -1  # unlabelled rows are ignored, as the metric ignores them
    num, den = weighted_ce_parts(logits, labels, (1, 2, 4))
    probs = torch.softmax(logits, -1).numpy()
    keep = labels.numpy() >= 0
    expected = weighted_log_loss(labels.numpy()[keep], probs[keep])
    assert abs(float(num / den) - expected) < 1e-6
    torch_ce = torch.nn.functional.cross_entropy(
        logits[3:].float(), labels[3:], weight=torch.tensor([1.0, 2.0, 4.0]))
    assert abs(float(num / den) - float(torch_ce)) < 1e-5


def test_any_severe_equals_the_metric_term():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(12, 5, 3)) * 2)
    labels = torch.tensor(rng.choice(3, size=(12, 5), p=[0.6, 0.25, 0.15]))
    labels[0, 4] = -1
    num, den = any_severe_parts(logits, labels, (1, 2, 4))
    severe = torch.softmax(logits, -1)[..., 2].numpy()
    keep = labels.numpy() >= 0
    studies = np.repeat(np.arange(12), 5).reshape(12, 5)
    expected = any_severe_log_loss(studies[keep], labels.numpy()[keep], severe[keep])
    assert abs(float(num / den) - expected) < 1e-5


def test_metric_loss_is_the_mean_of_present_terms():
    logits = {"spinal": torch.zeros(2, 5, 3), "foraminal": torch.zeros(2, 10, 3)}
    labels = {"spinal": torch.zeros(2, 5, dtype=torch.long),
              "foraminal": torch.full((2, 10), -1)}
    parts = loss_parts(logits, labels, (1, 2, 4), any_severe_weight=1.0)
    loss = metric_loss(parts)
    # spinal CE = log 3; any-severe: q = 1/3, y = 0 → −log(2/3); foraminal has no label.
    assert abs(float(loss) - (np.log(3) - np.log(2 / 3)) / 2) < 1e-6
