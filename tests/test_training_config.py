"""Typed config: strict keys and types, dotted overrides, resolved dump, packaged configs."""

import pytest
import yaml

from rsna_lumbar.training.config import (
    ConfigError,
    config_from_dict,
    dump_config,
    load_config,
)


def test_packaged_configs_load():
    default = load_config("default")
    tiny = load_config("tiny")
    assert default.model.spec == "resnet18_25d" and tiny.model.spec == "tiny"
    assert default.train.class_weights == (1.0, 2.0, 4.0)


def test_dotted_overrides_are_typed():
    config = load_config("tiny", ["train.lr=3e-4", "model.shared=true", "train.folds=[0, 2]",
                                  "data.views.spinal=[axial]", "model.size=null"])
    assert config.train.lr == 3e-4 and config.model.shared is True
    assert config.train.folds == (0, 2) and config.model.size is None
    assert config.data.views["spinal"] == ("axial",)
    assert config.data.views["foraminal"] == ("sag_t1",)  # untouched families keep defaults


@pytest.mark.parametrize("overrides,needle", [
    (["train.lrr=1"], "unknown config key train.lrr; did you mean train.lr?"),
    (["trian.lr=1"], "unknown config key trian; did you mean train?"),
    (["train.epochs=many"], "train.epochs: expected int, got 'many'"),
    (["train.epochs=2.5"], "train.epochs: expected int"),
    (["model.shared=3"], "model.shared: expected bool"),
    (["train.class_weights=[1, 2]"], "a list of 3"),
    (["data.views.spinal=[sag_t1]"], "choose a non-empty subset of ['sag_t2', 'axial']"),
    (["model.spec=resnet18_52d"], "did you mean 'resnet18_25d'"),
    (["train.epochs"], "is not KEY=VALUE"),
])
def test_strict_errors_say_what_to_do(overrides, needle):
    with pytest.raises(ConfigError) as error:
        load_config("tiny", overrides)
    assert needle in str(error.value)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match="bad.yaml: train.epochs: expected int"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_dump_round_trips():
    config = load_config("tiny", ["train.epochs=7"])
    text = dump_config(config)
    again = config_from_dict(yaml.safe_load(text))
    assert again == config
    assert "class_weights" in text and "any_severe_weight" in text


def test_a_retired_key_is_refused_in_a_config_but_read_from_a_run_folder(tmp_path):
    """augment.gamma_p never applied a gamma: setting it fails with why, while a run folder's
    config.yaml written with it still resumes as the same run and still loads."""
    from rsna_lumbar.training.loop import _same_config

    with pytest.raises(ConfigError, match="augment.gamma_p was removed .*median-centred"):
        load_config("cpu", ["augment.gamma_p=0.5"])
    path = tmp_path / "bad.yaml"
    path.write_text("augment:\n  gamma_p: 0.3\n")
    with pytest.raises(ConfigError, match="bad.yaml: augment.gamma_p was removed"):
        load_config(path)

    config = load_config("cpu", ["train.epochs=3"])
    saved = yaml.safe_load(dump_config(config))
    assert "gamma_p" not in saved["augment"]
    saved["augment"]["gamma_p"] = 0.3  # as run folders written before its removal hold it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert _same_config(tmp_path / "config.yaml", config)
    assert load_config(tmp_path / "config.yaml", saved=True) == config
    assert not _same_config(tmp_path / "config.yaml", load_config("cpu", ["train.epochs=4"]))
