"""The severity model: class frequencies, correlation along the spine, Bayes probabilities."""

import numpy as np

from rsna_lumbar.synth import severity


def _simulate(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    latent = np.array([severity.sample_latent(rng) for _ in range(n)])
    grades = np.array([severity.draw_grades(rng, z) for z in latent])
    return latent, grades


def test_class_frequencies_match_targets_per_condition_and_level():
    _, grades = _simulate()
    shares = np.stack([(grades == k).mean(axis=0) for k in range(3)], axis=-1)
    assert np.abs(shares - severity.TARGET_FREQUENCIES).max() < 0.03


def test_neighbouring_levels_correlate_more_than_distant_ones():
    latent, _ = _simulate(3000)
    spinal = latent[:, 0, :]
    near = np.corrcoef(spinal[:, 2], spinal[:, 3])[0, 1]
    far = np.corrcoef(spinal[:, 0], spinal[:, 4])[0, 1]
    assert near > far + 0.1 and far > 0.05


def test_bayes_probabilities_are_calibrated_and_beat_priors():
    latent, grades = _simulate(4000, seed=1)
    probs = severity.bayes_probabilities(latent)
    assert np.allclose(probs.sum(-1), 1.0)
    onehot = np.eye(3)[grades]
    assert np.abs(probs.mean(axis=0) - onehot.mean(axis=0)).max() < 0.03  # calibrated
    prior = onehot.mean(axis=0, keepdims=True)
    bayes_ll = -(onehot * np.log(probs)).sum(-1).mean()
    prior_ll = -(onehot * np.log(prior)).sum(-1).mean()
    assert bayes_ll < 0.75 * prior_ll
