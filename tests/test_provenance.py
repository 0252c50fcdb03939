"""provenance.json: what a model folder was made from (data fingerprint, kind, recipe, commit)."""

import re
import shutil

from rsna_lumbar import __version__, provenance
from rsna_lumbar.provenance import (data_fingerprint, data_kind, kit_commit, read_provenance,
                                    write_provenance)

IMAGES = (("train_images/1/10/1.dcm", b"ab"), ("test_images/2/20/1.dcm", b"c"))


def _competition(root, images=IMAGES):
    root.mkdir(parents=True)
    (root / "train.csv").write_text("study_id\n1\n")
    (root / "test_series_descriptions.csv").write_text("study_id,series_id,series_description\n")
    for name, data in images:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_fingerprint_follows_tables_and_image_names_and_sizes_not_location(tmp_path):
    data = _competition(tmp_path / "a")
    fp = data_fingerprint(data)
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert data_fingerprint(shutil.copytree(data, tmp_path / "elsewhere")) == fp
    (data / "train_images" / "1" / "10" / "1.dcm").write_bytes(b"xy")  # same size: not read
    assert data_fingerprint(data) == fp
    (data / "train_images" / "1" / "10" / "1.dcm").write_bytes(b"xyz")
    assert data_fingerprint(data) != fp
    fp = data_fingerprint(data)
    (data / "train_images" / "1" / "10" / "2.dcm").write_bytes(b"")
    assert data_fingerprint(data) != fp
    fp = data_fingerprint(data)
    (data / "train.csv").write_text("study_id\n2\n")
    assert data_fingerprint(data) != fp
    fp = data_fingerprint(data)
    (data / "notes.txt").write_text("not part of the data\n")
    assert data_fingerprint(data) == fp


def test_kind_is_synthetic_when_the_generator_left_its_truth(tmp_path):
    data = _competition(tmp_path / "d")
    assert data_kind(data) == "competition"
    (data / "truth").mkdir()
    (data / "truth" / "manifest.json").write_text("{}")
    assert data_kind(data) == "synthetic"


def test_commit_of_this_checkout_or_none_outside_one(tmp_path, monkeypatch):
    commit = kit_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
    monkeypatch.setattr(provenance, "__file__", str(tmp_path / "pkg" / "provenance.py"))
    assert kit_commit() is None
    (tmp_path / ".git").mkdir()  # a broken checkout: git fails, kit_commit does not
    assert kit_commit() is None


def test_write_then_read(tmp_path):
    data = _competition(tmp_path / "data")
    model = tmp_path / "model"
    path = write_provenance(model, data, recipe="--config tiny")
    assert path == model / "provenance.json"
    record = read_provenance(model)
    assert set(record) == set(provenance.KEYS)
    assert record["data_folder"] == str(data.resolve())
    assert record["data_fingerprint"] == data_fingerprint(data)
    assert (record["data_kind"], record["recipe"]) == ("competition", "--config tiny")
    assert record["kit_version"] == __version__ and record["commit"] == kit_commit()
    assert record["created"].endswith("+00:00")
    assert [p.name for p in model.iterdir()] == ["provenance.json"]  # no temporary file left
    assert read_provenance(tmp_path) is None
    (model / "provenance.json").write_text("[1]")
    assert read_provenance(model) is None
    (model / "provenance.json").write_text("{broken")
    assert read_provenance(model) is None
