"""The seed's comparison gives the numbers it gave before the architecture redesign (issue 17).

tests/data/golden/seed_digits_metrics.csv was written by ``initlab compare --dataset digits --seeds 2
--epochs 3`` on main at ef3b960, before any module moved. On the machine that wrote it the new code
reproduces it bit for bit (checked with ``cmp`` when the redesign landed); here, statuses, epochs and
divergence columns must be equal and every float within 1e-4 relative, which covers another CPU's
BLAS kernels summing in a different order (float32, 3 epochs) but not a changed computation: a
different init, data order or update moves these numbers by 1e-2 or more.
"""
from pathlib import Path

import numpy as np
import pandas as pd

import initlab

GOLDEN = Path(__file__).parent / "data" / "golden" / "seed_digits_metrics.csv"


def test_seed_comparison_metrics_unchanged(tmp_path):
    result = initlab.compare(dataset="digits", seeds=2, epochs=3, out=tmp_path / "run")
    assert result.complete
    now = pd.read_csv(tmp_path / "run" / "metrics.csv")
    before = pd.read_csv(GOLDEN)
    assert list(now.columns) == list(before.columns)
    exact = ["init", "seed", "epoch", "status", "diverged"]
    pd.testing.assert_frame_equal(now[exact], before[exact])
    for col in ("train_loss", "test_loss", "test_acc"):
        np.testing.assert_allclose(now[col].to_numpy(), before[col].to_numpy(), rtol=1e-4, atol=0, err_msg=col)
