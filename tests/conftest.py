"""Test-wide settings: offline, no writes outside tmp dirs."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest

# Grade frequencies close to the real ones (docs/competition.md): normal, moderate, severe.
_FAMILY_FREQUENCIES = {
    "spinal": (0.878, 0.075, 0.047),
    "foraminal": (0.78, 0.18, 0.04),
    "subarticular": (0.714, 0.19, 0.096),
}


def make_train_frame(n_studies: int, seed: int = 0, missing: float = 0.01) -> pd.DataFrame:
    """A random ``train.csv`` frame with realistic class balance and some missing labels."""
    from rsna_lumbar.vocabulary import SEVERITIES, TARGETS, target_column

    rng = np.random.default_rng(seed)
    grades = [s.value for s in SEVERITIES]
    frame = {"study_id": rng.choice(np.arange(10**6, 10**7), n_studies, replace=False)}
    for condition, level in TARGETS:
        p = _FAMILY_FREQUENCIES[condition.family.value]
        values = rng.choice(grades, size=n_studies, p=p).astype(object)
        values[rng.random(n_studies) < missing] = None
        frame[target_column(condition, level)] = values
    return pd.DataFrame(frame)


@pytest.fixture
def train_frame() -> pd.DataFrame:
    return make_train_frame(60, seed=1)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """``rsna-lumbar run --recipe tiny`` (8 + 3 synthetic studies, tiny models), every stage
    for real: ``(plan, summary)``, ``plan`` holding the recipe, ``work`` and ``weights`` (a
    trained model root: localiser, severity folder, priors, manifest) that predict and the
    Kaggle kernel's dry runs use."""
    import types

    from rsna_lumbar.recipes import load_recipe
    from rsna_lumbar.run import run_chain

    root = tmp_path_factory.mktemp("demo")
    recipe = load_recipe("tiny", ["synthetic.test_studies=3"])
    plan = types.SimpleNamespace(recipe=recipe, work=root / "work", weights=root / "weights")
    return plan, run_chain(recipe, plan.work, plan.weights)
