"""The scale benchmark's code at 40 studies (``python -m bench scale`` runs it at 2,000)."""

import pytest


@pytest.mark.slow
def test_scale_benchmark_measures_every_stage(tmp_path):
    from bench import scale

    result = scale.run(tmp_path, train_studies=40, test_studies=4)
    assert set(result["stages"]) == {"baseline_headers", "index", "localise", "crops"}
    for stage in result["stages"].values():
        assert stage["wall_s"] > 0 and 0.05 < stage["peak_rss_gb"] < 6
    assert result["train_dicom_files"] > 40 * 20
    assert result["disk_gb"]["crops_train"] > 0
    assert set(result["projection_real_1975_studies_h"]) == set(result["s_per_study"])
