"""Recipes: the packaged files are valid and strict; the gpu recipe runs end to end on a CPU.

The gpu recipe's end-to-end run (ImageNet-initialised EfficientNetV2-S and ConvNeXt-S at a tiny
crop size, weights pulled from local files into a temporary cache) is slow on 2 cores: it is
marked ``slow`` and run by ``make test-recipes``.
"""

import pytest

from rsna_lumbar.recipes import RecipeError, load_recipe, packaged
from rsna_lumbar.training.config import load_config


def test_every_packaged_recipe_loads_and_its_members_configs_resolve():
    assert set(packaged()) == {"tiny", "demo", "cpu", "gpu", "cv200"}
    for name in packaged():
        recipe = load_recipe(name)
        for member in recipe.members:
            config = load_config(member.config, member.config_overrides())
            if member.epochs is not None:
                assert config.train.epochs == member.epochs
    gpu = load_recipe("gpu")
    specs = [load_config(m.config, m.config_overrides()).model for m in gpu.members]
    assert [s.spec for s in specs] == ["efficientnetv2_s_gru", "convnext_small_25d"]
    assert all(s.pretrained for s in specs)  # competition strength starts from ImageNet
    # the 200-study CV is the cpu recipe's severity members as they are
    assert load_recipe("cv200").members == load_recipe("cpu").members
    demo = load_recipe("demo")  # two seeds of one member, graded with the mirrored canal pass
    assert [m.name for m in demo.members] == ["severity_cpu", "severity_cpu_seed43"]
    assert demo.settings["predict"]["tta"] is True


@pytest.mark.parametrize("overrides, message", [
    (["bogus=1"], "unknown key 'bogus'"),
    (["localiser.steps.sag_t3=5"], r"unknown key 'sag_t3' \(known here: axial, sag_t1, sag_t2\)"),
    (["localiser.steps=5", "localiser.steps.sag_t3=5"], "localiser.steps holds no keys"),
    (["severity.2.epochs=1"], "not an index of a 1-item list"),
    (["folds=1"], "folds must be an integer of at least 2"),
    (["localiser.real_exams=maybe"], "localiser.real_exams: auto, true or false"),
    (["folds"], "write KEY=VALUE"),
    (["predict.chunk_studies=0"], "predict.chunk_studies must be an integer of at least 1"),
    (["threads=abc"], "threads must be an integer"),
    (["severity.0.epochs=abc"], "epochs must be an integer"),
    (["severity.0.config=nosuch"], "config nosuch not found"),
    (["severity.0.overrides=[bogus.key=1]"], "unknown config key bogus"),
    (["crops.spinal.sag_t3.px=96"], "unknown key 'sag_t3'"),
    (["crops.spinal.sag_t2.pix=96"], "unknown key 'pix'"),
    (["crops.spinal.sag_t2.slices=4"], "odd n_slices"),
    (["localiser.stride=3"], "stride must be 0"),
    (["localiser.input_px=100"], "multiple of 32"),
    (["predict.tta=maybe"], "predict.tta: true or false"),
    (["localiser=packaged", "localiser.batch=4"], "localiser holds no keys"),
    (["localiser=pretrained"], "or the word 'packaged'"),
])
def test_wrong_overrides_are_refused_with_what_to_change(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("cpu", overrides)


def test_the_packaged_localiser_is_a_recipe_choice():
    assert load_recipe("demo").packaged_localiser  # the demo trains no localiser
    assert not load_recipe("cpu").packaged_localiser
    assert load_recipe("cpu", ["localiser=packaged"]).packaged_localiser


def test_optional_keys_may_be_set_by_override():
    assert load_recipe("demo", ["severity.0.name=mine"]).members[0].name == "mine"
    with pytest.raises(RecipeError, match="synthetic needs exactly the keys"):
        load_recipe("cpu", ["synthetic.studies=12"])  # a section is all or nothing
    made = load_recipe("cpu", ["synthetic={studies: 12, test_studies: 2, seed: 0}"])
    assert made.synthetic == {"studies": 12, "test_studies": 2, "seed": 0}


def test_a_recipe_file_with_an_unknown_key_is_refused(tmp_path):
    text = (packaged()["tiny"]).read_text() + "epochs: 3\n"
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['epochs'\]"):
        load_recipe(tmp_path / "mine.yaml")
    with pytest.raises(RecipeError, match="no recipe 'nosuch'"):
        load_recipe("nosuch")


@pytest.mark.slow
def test_gpu_recipe_runs_end_to_end_on_the_cpu_at_a_tiny_size(demo, tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    from rsna_lumbar.models.weights import pull_weights
    from rsna_lumbar.run import run_chain

    plan, _ = demo
    cache = tmp_path / "timm"
    monkeypatch.setenv("RSNA_TIMM_WEIGHTS", str(cache))
    for backbone in ("tf_efficientnetv2_s", "convnext_small"):  # stand-ins for ImageNet files
        source = tmp_path / f"{backbone}.safetensors"
        save_file(timm.create_model(backbone, pretrained=False).state_dict(), str(source))
        pull_weights(backbone, cache, source=source)
    small = "model.slices=3, model.size=32, train.batch_size=2, train.workers=0"
    members = [f"severity.{k}.overrides=[model.spec={spec}, model.pretrained=true, {small}]"
               for k, spec in enumerate(("efficientnetv2_s_gru", "convnext_small_25d"))]
    recipe = load_recipe("gpu", ["folds=2", "localiser.steps=4", "localiser.batch=8",
                                 "severity.0.epochs=1", "severity.1.epochs=1", *members])
    summary = run_chain(recipe, tmp_path / "work", tmp_path / "weights", plan.work / "data")
    assert set(summary["members"]) == {"severity_effv2s_gru", "severity_convnext_s"}
    assert summary["test"]["studies"] == 3 and summary["test"]["score"] > 0
    for name in summary["members"]:
        made = (tmp_path / "weights" / name / "provenance.json").read_text()
        assert '"data_kind": "synthetic"' in made
