"""Integration on the real Fashion-MNIST (Debian's dataset-fashion-mnist package; .ci/run installs it)."""
import os
from pathlib import Path

import pytest

import initlab

FASHION = Path("/usr/share/datasets/fashion-mnist")


def require_fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{FASHION} is missing in CI; .ci/run installs dataset-fashion-mnist")
        pytest.skip(f"{FASHION} absent (apt-get install dataset-fashion-mnist)")


def test_he_one_epoch_fashion_mnist_reaches_80_percent():
    require_fashion()
    res = initlab.compare(inits=["he"], dataset="fashion-mnist", epochs=1, seeds=1, device="cpu")
    acc = res.summary.set_index("init").loc["he", "final_test_acc_mean"]
    assert acc >= 0.80, acc
