"""torchrun + DistributedDataParallel on CPU (2 gloo processes) through the real entry point.

With a GroupNorm backbone (no batch statistics), no dropout, the global batch split across the
two processes and the loss normalised by the global weight sums, the DDP fold must equal a
single-process fold: same weights, same out-of-fold logits, up to float summation order
(amplified a little by AdamW’s first step, which moves each weight by about ±lr).
"""

import os
import subprocess
import sys

import pandas as pd
import torch
from crop_factory import make_crop_cache
from safetensors.torch import load_file

from rsna_lumbar.training.config import load_config
from rsna_lumbar.training.loop import train_cv

OVERRIDES = ["model.spec=tiny_gn", "train.epochs=1", "train.folds=[0]", "train.batch_size=4",
             "augment.enabled=false", "data.slice_jitter=0"]


def test_two_gloo_processes_equal_one_process(tmp_path):
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=12, slices=3, size=16, k=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "rsna_lumbar", "train", "--crops", str(crops), "--folds",
               str(folds_csv), "--labels", str(train_csv), "--config", "tiny", "--out",
               str(tmp_path / "ddp"), "--no-report", *OVERRIDES]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    single = train_cv(crops, folds_csv, train_csv, load_config("tiny", OVERRIDES), tmp_path / "one")
    ddp_state = load_file(str(tmp_path / "ddp" / "fold_0" / "model.safetensors"))
    one_state = load_file(str(single / "fold_0" / "model.safetensors"))
    assert ddp_state.keys() == one_state.keys()
    for key in one_state:
        torch.testing.assert_close(ddp_state[key], one_state[key], rtol=1e-3, atol=1e-4)
    ddp_oof = pd.read_csv(tmp_path / "ddp" / "oof_logits.csv")
    one_oof = pd.read_csv(single / "oof_logits.csv")
    assert len(ddp_oof) == len(one_oof) == 25 * 6 and not ddp_oof.row_id.duplicated().any()
    pd.testing.assert_frame_equal(ddp_oof, one_oof, rtol=1e-3, atol=1e-4)
