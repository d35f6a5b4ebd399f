"""Every zoo model trained by the torch.func engine equals the single loop, run by run; and compare
picks the engine (hand-written MLP engine, torch.func, or the single loop with a reason)."""
import warnings

import pytest
import torch
from torch import nn

from initlab.experiments.compare import CompareSpec, run_compare
from initlab.models import make_model
from initlab.training.loop import TrainConfig
from tests.test_func_engine import assert_same_run, single_and_batched, toy

ZOO_SPECS = [  # small enough for seconds; every norm and residual option once
    "cnn(depth=2,channels=4)",
    "cnn(depth=2,channels=4,norm=batch,pool=avg)",
    "resmlp(blocks=2,width=12,norm=batch)",
    "resmlp(blocks=2,width=12,norm=layer,gate=true)",
    "resnet(blocks=2,width=4,norm=none,fixup=true)",
    "resnet(blocks=1,width=4,norm=batch)",
    "resnet(blocks=1,width=4,norm=layer,m=1)",
    "transformer(depth=1,width=8,heads=2)",
    "transformer(depth=1,width=8,heads=2,patch=4)",
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny runs: one thread is faster on a shared 2-core machine


@pytest.mark.parametrize("spec", ZOO_SPECS)
def test_zoo_model_in_the_func_engine_equals_the_single_loop(spec):
    data = toy((1, 8, 8))
    probe = make_model(spec, (1, 8, 8), 4)
    data = data.shaped(probe.input_shape)
    # Adam on the BN-free CNN only: elsewhere some gradients are ~0 by symmetry (a conv bias before
    # BatchNorm, attention's key bias) and Adam divides their rounding noise by sqrt(v) (test_func_engine.py)
    optimizer = "adam" if spec == ZOO_SPECS[0] else "sgd"
    lrs = (0.002, 0.004, 0.001) if optimizer == "adam" else (0.05, 0.1, 0.02)
    runs = [(i, s, TrainConfig(epochs=2, lr=lr, momentum=0.9 if optimizer == "sgd" else 0.0,
                               optimizer=optimizer, batch_size=48))
            for i, s, lr in zip((0, 1, 2), (0, 1, 0), lrs)]
    singles, models, batched, modules = single_and_batched(lambda: make_model(spec, (1, 8, 8), 4), data, runs)
    for k in range(len(runs)):
        assert_same_run(singles[k], models[k], batched[k], modules[k])
    assert len({round(float(r.step_losses[-1]), 5) for r in batched}) == len(runs)


def _spec(model, engine="batched", **kw):
    return CompareSpec(inits=("he", "xavier"), dataset="digits", model=model, seeds=2, engine=engine,
                       train=TrainConfig(epochs=1, batch_size=64, **kw), probe=False)


@pytest.mark.parametrize("model", ["cnn(depth=2,channels=4,norm=batch)", "transformer(depth=1,width=8,heads=2)"])
def test_compare_on_a_zoo_model_gives_the_same_numbers_batched_and_single(model):
    a = run_compare(_spec(model)).metrics.sort_values(["init", "seed"]).reset_index(drop=True)
    b = run_compare(_spec(model, engine="single")).metrics.sort_values(["init", "seed"]).reset_index(drop=True)
    for col in ("train_loss", "test_loss", "test_acc"):
        torch.testing.assert_close(torch.tensor(a[col].to_numpy()), torch.tensor(b[col].to_numpy()),
                                   rtol=1e-4, atol=1e-6)


def test_compare_chooses_the_engine_and_says_why_it_falls_back():
    from initlab.experiments.compare import ProbeBatch, choose_engine, prepare_data
    from initlab.data import load_dataset

    data = load_dataset("digits")
    for model, kind in (("mlp(depth=2,width=16)", "mlp"), ("cnn", "func"), (None, "mlp")):
        spec = _spec(model)
        d = prepare_data(spec, data)
        assert choose_engine(spec, d, ProbeBatch(spec, d)) == (kind, None)
    spec = _spec(_dropout_net)
    d = prepare_data(spec, data)
    kind, why = choose_engine(spec, d, ProbeBatch(spec, d))
    assert kind == "single" and "random" in why
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_compare(spec)
    assert any("batched engine cannot train" in str(w.message) for w in caught)
    assert list(res.runs["status"]) == ["done"] * 4


def _dropout_net(in_features, out_features):
    return nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, out_features))
