"""Ablation: variants validated up front, trained on the same folds, one comparison table."""

import itertools
from types import SimpleNamespace

import pandas as pd
import pytest
from crop_factory import make_crop_cache

from rsna_lumbar.cli import main
from rsna_lumbar.training.ablate import read_variants
from rsna_lumbar.training.config import ConfigError


def test_ablate_writes_one_table(tmp_path, capsys, monkeypatch):
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=8, slices=3, size=16, k=2)
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        "common: {train.epochs: 1, train.folds: [0]}\n"
        "variants:\n"
        "  baseline: {}\n"
        "  spinal_sagittal_only: {data.views.spinal: [sag_t2], model.shared: true}\n")
    out = tmp_path / "ablation"
    code = main(["ablate", "--crops", str(crops), "--folds", str(folds_csv), "--labels",
                 str(train_csv), "--config", "tiny", "--variants", str(variants), "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "comparison.csv")
    assert sorted(table.variant) == ["baseline", "spinal_sagittal_only"]
    assert {"score", "any_severe_spinal", "bal_acc_spinal", "moderate_recall_foraminal",
            "params_m", "train_s"} <= set(table.columns)
    assert table.score.is_monotonic_increasing
    assert (out / "comparison.md").read_text().startswith("| variant |")
    assert (out / "spinal_sagittal_only" / "metrics.json").is_file()
    assert "data.views.spinal" in capsys.readouterr().out

    # --only: a subset; finished variants are reused (not retrained), the table lists the subset
    (out / "baseline" / "train_seconds.txt").write_text("1234.5\n")  # as if training took 20 min
    clock = itertools.count(step=10.0)  # and reusing it took a while on a busy machine
    monkeypatch.setattr("rsna_lumbar.training.ablate.time",
                        SimpleNamespace(time=lambda: next(clock)))
    trained = (out / "baseline" / "fold_0" / "model.safetensors").stat().st_mtime_ns
    code = main(["ablate", "--crops", str(crops), "--folds", str(folds_csv), "--labels",
                 str(train_csv), "--config", "tiny", "--variants", str(variants), "--out",
                 str(out), "--only", "baseline"])
    assert code == 0
    assert list(pd.read_csv(out / "comparison.csv").variant) == ["baseline"]
    assert (out / "baseline" / "fold_0" / "model.safetensors").stat().st_mtime_ns == trained
    assert pd.read_csv(out / "comparison.csv").train_s[0] == 1234.5  # the training's time
    capsys.readouterr()
    code = main(["ablate", "--crops", str(crops), "--folds", str(folds_csv), "--labels",
                 str(train_csv), "--config", "tiny", "--variants", str(variants), "--out",
                 str(out), "--only", "baselin"])
    assert code != 0 and "--only names ['baselin']" in capsys.readouterr().err


def test_bad_variant_fails_before_training(tmp_path):
    variants = tmp_path / "v.yaml"
    variants.write_text("variants:\n  typo: {train.epoch: 3}\n")
    with pytest.raises(ConfigError, match="variant typo: unknown config key train.epoch"):
        from rsna_lumbar.training.ablate import variant_configs

        variant_configs({}, variants)
    (tmp_path / "w.yaml").write_text("runs: {}\n")
    with pytest.raises(ConfigError, match="variants"):
        read_variants(tmp_path / "w.yaml")


@pytest.mark.parametrize("base", ["cpu", "default"])
def test_packaged_variant_files_validate(base):
    """Every shipped ablation file is valid on the configs it is run with (fails at start-up,
    not after hours of training, when a key is misspelt)."""
    import yaml

    from rsna_lumbar.training.ablate import variant_configs
    from rsna_lumbar.training.config import config_path, packaged_config

    files = sorted(packaged_config("cpu").parent.glob("ablation*.yaml"))
    assert {f.stem for f in files} >= {"ablation", "ablation_cpu", "ablation_spinal_cpu"}
    values = yaml.safe_load(config_path(base).read_text(encoding="utf-8"))
    for path in files:
        configs, _ = variant_configs(values, path)
        assert "baseline" in configs
    spinal, _ = variant_configs(values, packaged_config("ablation_spinal_cpu"))
    assert all(c.data.families == ("spinal",) for c in spinal.values())


def test_recorded_cpu_ablations_pin_the_schedule_they_ran_with():
    """The cpu ablation files back committed result files: their baseline must stay the member
    they ran against when the `cpu` config's schedule moves on (it went 20 → 40 epochs and took
    an EMA after them), so each pins both in ``common``."""
    import yaml

    from rsna_lumbar.training.config import packaged_config

    files = sorted(packaged_config("cpu").parent.glob("ablation_*cpu*.yaml"))
    assert len(files) >= 4
    for path in files:
        common = yaml.safe_load(path.read_text(encoding="utf-8"))["common"]
        assert {"train.epochs", "train.ema"} <= set(common), f"{path.name}: pin them in common"


def test_ablate_grades_at_the_localised_points_too(tmp_path):
    """--localised-crops: a variant with a localised share trains on them, and every variant is
    graded out of fold on them as well; the table is sorted by that honest score."""
    import json

    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=8, slices=3, size=16, k=2)
    localised, _, _ = make_crop_cache(tmp_path / "localised", n_studies=8, slices=3, size=16, k=2,
                                      noise=1.2)
    variants = tmp_path / "variants.yaml"
    variants.write_text("common: {train.epochs: 1, train.folds: [0]}\n"
                        "variants:\n  baseline: {}\n  share: {data.localised_share: 0.5}\n")
    out = tmp_path / "ablation"
    code = main(["ablate", "--crops", str(crops), "--folds", str(folds_csv), "--labels",
                 str(train_csv), "--config", "tiny", "--variants", str(variants), "--out",
                 str(out), "--localised-crops", str(localised)])
    assert code == 0
    table = pd.read_csv(out / "comparison.csv")
    assert {"score_localised", "spinal_localised", "any_severe_spinal_localised"} <= set(table.columns)
    assert table.score_localised.is_monotonic_increasing
    assert (table.score_localised != table.score).any()  # graded on other crops
    for name in ("baseline", "share"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["oof_crops"] == str(localised)  # the folder keeps that calibration
    config = (out / "share" / "config.yaml").read_text()
    assert "localised_share: 0.5" in config
