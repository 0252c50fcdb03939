"""The level-context network: the conditions of a level graded together, a slot without views
graded from its level, and the data, prediction and test-time paths that go with it."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from crop_factory import make_crop_cache

from rsna_lumbar.cli import main
from rsna_lumbar.crops.cache import CropCache
from rsna_lumbar.models import load_model_folder
from rsna_lumbar.models.dataset import StudyDataset, graded_slots, labels_by_study
from rsna_lumbar.models.forward import softmax
from rsna_lumbar.models.network import create_model
from rsna_lumbar.models.predictor import Mirrored
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.config import AugmentConfig, ConfigError, load_config
from rsna_lumbar.vocabulary import TARGETS, VIEWS

SLOTS = {"spinal": 5, "foraminal": 10, "subarticular": 10}


def _study_inputs(b=2, s=3, size=32, seed=0):
    """Whole studies: family → (x (b·N_f, V_f, s, size, size), mask (b·N_f, V_f)), all present."""
    g = torch.Generator().manual_seed(seed)
    return {f: (torch.randn(b * n, len(VIEWS[f]), s, size, size, generator=g),
                torch.ones(b * n, len(VIEWS[f]), dtype=torch.bool)) for f, n in SLOTS.items()}


def _changed(before, after, rows):
    return [bool(not torch.allclose(before[r], after[r])) for r in rows]


@pytest.mark.parametrize("shared", [False, True])
def test_a_slot_is_graded_from_its_own_level_and_one_without_views_from_the_rest(shared):
    torch.manual_seed(0)
    model = create_model("tiny", list(SLOTS), VIEWS, shared=shared, level_context=True).eval()
    inputs = _study_inputs()
    x, mask = inputs["subarticular"]
    mask[[2, 7]] = False  # study 0: no axial view of either recess at L3/L4
    x[[2, 7]] = 50.0  # … so these pixels must not matter
    logits = model(inputs)
    assert {f: tuple(v.shape) for f, v in logits.items()} == {f: (2 * n, 3) for f, n in SLOTS.items()}
    assert all(torch.isfinite(v).all() for v in logits.values())
    x2 = x.clone()
    x2[[2, 7]] = -50.0
    np.testing.assert_allclose(model({**inputs, "subarticular": (x2, mask)})["subarticular"].detach(),
                               logits["subarticular"].detach(), atol=1e-5)
    # The canal's L3/L4 crops of study 0 reach its recesses at L3/L4 (graded without views of
    # their own), not those at L4/L5 (slots 3, 8) nor study 1's (slots 12, 17).
    spinal = inputs["spinal"][0].clone()
    spinal[2] += 2.0
    after = model({**inputs, "spinal": (spinal, inputs["spinal"][1])})["subarticular"].detach()
    assert _changed(logits["subarticular"].detach(), after, [2, 7, 3, 8, 12, 17]) == [True, True] + [False] * 4
    model.train()
    sum(v.sum() for v in model(inputs).values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)  # fmt: skip


@pytest.mark.parametrize("detached", [False, True])
def test_a_detached_context_trains_each_encoder_on_its_own_loss_only(detached):
    torch.manual_seed(0)
    model = create_model("tiny", list(SLOTS), VIEWS, level_context=True, context_detached=detached)
    inputs = _study_inputs()
    out = model(inputs)
    out["spinal"].sum().backward()  # the canal's loss alone
    reached = [p.grad is not None and bool(p.grad.abs().sum() > 0)
               for p in model.encoders["subarticular"].parameters()]
    assert any(reached) != detached  # coupled: the canal's loss trains the recess encoder
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.context.parameters())
    model.zero_grad()
    # … and the context still changes what the canal's head sees
    spinal = inputs["subarticular"][0] + 2.0
    again = model({**inputs, "subarticular": (spinal, inputs["subarticular"][1])})["spinal"]
    assert not torch.allclose(again, out["spinal"])


def test_without_level_context_a_family_never_sees_another():
    torch.manual_seed(0)
    model = create_model("tiny", list(SLOTS), VIEWS).eval()
    inputs = _study_inputs()
    logits = model(inputs)["subarticular"].detach()
    spinal = inputs["spinal"][0] + 2.0
    after = model({**inputs, "spinal": (spinal, inputs["spinal"][1])})["subarticular"].detach()
    torch.testing.assert_close(after, logits)


def test_graded_slots_extend_to_the_level_only_with_context():
    present = {"spinal": np.array([[1, 0, 0, 0, 0]], bool),
               "subarticular": np.array([[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]], bool)}
    assert graded_slots(present)["subarticular"].tolist() == present["subarticular"].tolist()
    graded = graded_slots(present, level_context=True)
    assert graded["spinal"].tolist() == [[1, 0, 0, 1, 0]]
    assert graded["subarticular"].tolist() == [[1, 0, 0, 1, 0] * 2]
    as_tensors = graded_slots({f: torch.from_numpy(v) for f, v in present.items()}, True)
    assert all(as_tensors[f].numpy().tolist() == graded[f].tolist() for f in graded)


@pytest.fixture(scope="module")
def without_axial(tmp_path_factory):
    """A crop cache in which no study has an axial view."""
    return make_crop_cache(tmp_path_factory.mktemp("no_axial"), n_studies=4, slices=3, size=16,
                           missing_view=1.0, missing_label=0.0)


def test_dataset_labels_a_recess_without_axial_only_for_a_level_context_network(without_axial):
    crops, train_csv, _ = without_axial
    cache = CropCache(crops)
    labels = labels_by_study(read_train(train_csv))
    common = dict(families=list(SLOTS), views=VIEWS, slices=3, size=16)
    per_family = StudyDataset(cache, cache.study_ids, labels, **common)[0]
    in_context = StudyDataset(cache, cache.study_ids, labels, level_context=True, **common)[0]
    assert not per_family["mask"]["subarticular"].any()
    assert (per_family["label"]["subarticular"] == -1).all()
    assert (in_context["label"]["subarticular"] >= 0).all()  # the level has its sagittal views
    torch.testing.assert_close(in_context["label"]["spinal"], per_family["label"]["spinal"])


def test_a_level_whose_axial_crops_are_hidden_keeps_the_labels_the_level_model_grades(tmp_path):
    crops, train_csv, _ = make_crop_cache(tmp_path, n_studies=2, slices=3, size=16, missing_view=0.0,
                                          missing_label=0.0)
    cache = CropCache(crops)
    labels = labels_by_study(read_train(train_csv))
    common = dict(families=list(SLOTS), views=VIEWS, slices=3, size=16,
                  augment=AugmentConfig(hide_axial_p=0.5))
    items = {context: StudyDataset(cache, cache.study_ids, labels, level_context=context, **common)[0]
             for context in (False, True)}  # fmt: skip
    item = items[True]
    canal_axial = item["mask"]["spinal"][:, VIEWS["spinal"].index("axial")]
    uncovered = ~canal_axial
    assert 0 < int(uncovered.sum()) < 5  # some of the five levels lost their axial crops …
    assert item["mask"]["spinal"][:, VIEWS["spinal"].index("sag_t2")].all()  # … never the sagittal
    recess = item["mask"]["subarticular"].any(-1).reshape(2, 5)
    assert (recess == ~uncovered).all()  # both recesses of exactly those levels hidden
    assert (item["x"]["subarticular"].reshape(2, 5, -1)[:, uncovered] == 0).all()
    assert (item["label"]["subarticular"] >= 0).all()  # graded from the level: labels kept
    without = items[False]["label"]["subarticular"].reshape(2, 5)
    assert (without[:, uncovered] == -1).all() and (without[:, ~uncovered] >= 0).all()
    again = StudyDataset(cache, cache.study_ids, labels, level_context=True, **common)[0]
    assert all(torch.equal(item["mask"][f], again["mask"][f]) for f in SLOTS)  # draws repeat


def test_the_context_block_leaves_the_other_initial_weights_as_they_were():
    torch.manual_seed(0)
    plain = create_model("tiny", list(SLOTS), VIEWS).state_dict()
    torch.manual_seed(0)
    in_context = create_model("tiny", list(SLOTS), VIEWS, level_context=True).state_dict()
    assert all(torch.equal(plain[k], in_context[k]) for k in plain)
    assert sorted({k.split(".")[0] for k in in_context} - {k.split(".")[0] for k in plain}) == ["context"]


def test_hiding_axial_crops_is_a_chance():
    with pytest.raises(ConfigError, match="hide_axial_p"):
        load_config(None, ["augment.hide_axial_p=1.0"])
    assert load_config(None, ["augment.hide_axial_p=0.2"]).augment.hide_axial_p == 0.2


def test_mirrored_patient_swaps_the_sides_of_the_sided_crops():
    crop = np.arange(8, dtype=np.float16).reshape(2, 2, 2)
    keys = {"left_neural_foraminal_narrowing/l1_l2/sag_t1": "right_neural_foraminal_narrowing/l1_l2/sag_t1",
            "right_subarticular_stenosis/l4_l5/axial": "left_subarticular_stenosis/l4_l5/axial"}

    class Source:
        geometry = None

        def arrays(self, study_id):
            return {**{k: crop + i for i, k in enumerate(keys)}, "spinal_canal_stenosis/l1_l2/axial": crop}

    arrays = Mirrored(Source()).arrays(1)
    for i, (key, other) in enumerate(keys.items()):
        np.testing.assert_array_equal(arrays[other], crop + i)  # moved, not flipped
        assert key not in arrays
    assert not np.array_equal(arrays["spinal_canal_stenosis/l1_l2/axial"], crop)  # flipped


def test_a_trained_level_context_folder_grades_recesses_without_axial_crops(tmp_path):
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=16, slices=3, size=16, k=2)
    out = tmp_path / "model"
    code = main(["train", "--crops", str(crops), "--folds", str(folds_csv), "--labels", str(train_csv),
                 "--config", "tiny", "--out", str(out), "train.folds=[0]", "train.epochs=2",
                 "model.level_context=true", "augment.hide_axial_p=0.2"])  # fmt: skip
    assert code == 0
    assert json.loads((out / "model.json").read_text())["level_context"] is True
    oof = pd.read_csv(out / "oof.csv")
    ensemble = load_model_folder(out)
    study = int(oof.row_id.str.split("_").str[0].iloc[0])
    with np.load(crops / f"{study}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if not k.endswith("/axial")}  # no axial stack
    probs, mask = ensemble.predict_study(arrays)
    recess = np.array([c.family.value == "subarticular" for c, _ in TARGETS])
    assert mask[recess].all()  # graded from the sagittal views of their levels, not priors
    assert not np.allclose(probs[recess], ensemble.priors[recess], atol=1e-3)
    # The mirrored pass reads the whole mirrored patient and averages the canal's logits.
    class Source:
        geometry = ensemble.geometry

        def arrays(self, study_id):
            return arrays

    mirrored, _ = ensemble.predict_study(Mirrored(Source()).arrays(0))
    ensemble.tta = True
    with_tta, tta_mask = ensemble.predict_study(arrays)
    assert (tta_mask == mask).all()
    canal = np.array([c.value == "spinal_canal_stenosis" for c, _ in TARGETS])
    # logits averaged = log-probabilities averaged, renormalised (a softmax ignores a shift)
    np.testing.assert_allclose(with_tta[canal], softmax((np.log(probs[canal]) + np.log(mirrored[canal])) / 2),
                               atol=1e-5)  # fmt: skip
    assert not np.allclose(with_tta[canal], probs[canal], atol=1e-4)
    np.testing.assert_allclose(with_tta[recess], probs[recess], atol=1e-6)  # only the canal averaged
    # The benchmark of the same case grades every labelled recess from its level without axial.
    from bench.recess_fallback import compare

    result = compare(crops, train_csv, [out])
    without = result["models"]["model"]["without_axial"]
    assert result["rows"] > 0 and without["graded_share"] == 1.0
    assert np.isfinite(without["subarticular"])


def test_a_detached_context_needs_the_context():
    with pytest.raises(ConfigError, match="context_detached needs"):
        load_config(None, ["model.context_detached=true"])
