import math

import numpy as np
import pytest
import torch

from initlab.data import class_balance, majority_rate
from initlab.experiments.compare import CompareSpec, build_model
from initlab.models import mlp
from initlab.schemes import initialize, parse_scheme
from initlab.training.loop import TrainConfig, derive_seed, evaluate, train_model


def record_inputs(model):
    """Record a fingerprint of every training batch the model sees."""
    seen = []
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()) if mod.training else None)
    return seen


def test_derive_seed_streams_differ_and_are_stable():
    assert derive_seed(0, 0) != derive_seed(0, 1)
    assert derive_seed(0, 0) != derive_seed(1, 0)
    assert derive_seed(3, 1) == derive_seed(3, 1)


def test_paired_data_order_same_seed_same_batches(digits):
    cfg = TrainConfig(epochs=2, batch_size=64)
    streams = {}
    for init in ("zero", "he"):
        model = mlp(64, [16], 10)
        initialize(model, init, generator=torch.Generator().manual_seed(1))
        streams[init] = record_inputs(model)
        train_model(model, digits, cfg, seed=7)
    a, b = streams["zero"], streams["he"]
    assert len(a) == len(b) == 2 * math.ceil(1437 / 64)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # A different seed is a different order.
    model = mlp(64, [16], 10)
    other = record_inputs(model)
    train_model(model, digits, cfg, seed=8)
    assert not torch.equal(other[0], a[0])


def test_every_epoch_visits_every_example_once(digits):
    model = mlp(64, [8], 10)
    seen = record_inputs(model)
    train_model(model, digits, TrainConfig(epochs=1, batch_size=100), seed=0)
    x = torch.cat(seen)
    assert x.shape == digits.x_train.shape
    # same multiset of rows: sort rows lexicographically via a random projection
    proj = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(torch.sort(x.double() @ proj).values, torch.sort(digits.x_train.double() @ proj).values)


def test_build_model_is_fresh_and_initialized_per_run(digits):
    """The seed notebook's bug: one model object reused, 'zero'/'random' never applied."""
    spec = CompareSpec(inits=("zero", "random", "xavier", "he"), dataset="digits", hidden=(32,))
    models = {i: build_model(spec, digits, parse_scheme(i), seed=0, device="cpu") for i in spec.inits}
    assert len({id(m) for m in models.values()}) == 4
    w = {i: m.fc1.weight for i, m in models.items()}
    assert torch.count_nonzero(w["zero"]) == 0 and torch.count_nonzero(models["zero"].fc1.bias) == 0
    assert abs(w["random"].std().item() - 0.01) < 0.01 * 5 / math.sqrt(2 * w["random"].numel())
    # He (kaiming_uniform, fan_in): std sqrt(2 / fan_in); Xavier uniform: sqrt(2 / (fan_in + fan_out)).
    assert w["he"].std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    assert w["xavier"].std().item() == pytest.approx(math.sqrt(2 / (64 + 32)), rel=0.1)
    # Training one model does not touch the next one's starting point.
    before = models["he"].fc1.weight.clone()
    train_model(models["zero"], digits, TrainConfig(epochs=1), seed=0)
    assert torch.equal(build_model(spec, digits, parse_scheme("he"), seed=0, device="cpu").fc1.weight, before)


def test_zero_init_stays_symmetric_and_predicts_one_class(digits):
    model = mlp(64, [32], 10)
    initialize(model, "zero")
    res = train_model(model, digits, TrainConfig(epochs=3, lr=0.1), seed=0)
    assert not res.diverged
    w = model.fc1.weight
    assert torch.equal(w, w[:1].expand_as(w)), "hidden units must stay identical under zero init"
    assert torch.equal(model.fc1.bias, model.fc1.bias[:1].expand_as(model.fc1.bias))
    with torch.no_grad():
        pred = model(digits.x_test).argmax(1)
    assert pred.unique().numel() == 1  # a constant classifier
    predicted = int(pred[0])
    # Its accuracy is the test rate of the class it predicts: the majority-class rate at most. Digits
    # is near-balanced (35-37 of 360 per class), so which class wins depends on SGD noise in the
    # output biases, the only parameters that learn.
    balance = class_balance(digits.y_test, 10)
    assert res.epochs[-1]["test_acc"] == pytest.approx(float(balance[predicted]), abs=1e-12)
    assert res.epochs[-1]["test_acc"] <= majority_rate(digits.y_test)
    assert not torch.equal(model.fc2.bias, torch.zeros(10))
    assert torch.count_nonzero(model.fc2.weight) == 0  # hidden outputs are relu(0) = 0: no signal


def test_he_learns_digits(digits):
    model = mlp(64, [64], 10)
    initialize(model, "he", generator=torch.Generator().manual_seed(0))
    res = train_model(model, digits, TrainConfig(epochs=5, lr=0.05), seed=0)
    assert res.epochs[-1]["test_acc"] > 0.9
    assert len(res.step_losses) == 5 * math.ceil(1437 / 64)
    assert res.step_losses[-10:].mean() < res.step_losses[:10].mean()


def test_divergence_is_recorded_not_raised(digits):
    # Cross-entropy grows only linearly in the logits, so a loss reaches inf through the weights:
    # std 10 over three layers of width 64 multiplies the scale by ~80 per layer, and lr 1 feeds it back.
    model = mlp(64, [64, 64, 64], 10)
    initialize(model, "normal", std=10.0, generator=torch.Generator().manual_seed(0))
    res = train_model(model, digits, TrainConfig(epochs=5, lr=1.0), seed=0)
    assert res.diverged and res.diverged_epoch == 1
    assert 0 <= res.diverged_step < math.ceil(1437 / 64)
    assert not np.isfinite(res.step_losses[res.diverged_step])
    assert np.isfinite(res.step_losses[: res.diverged_step]).all()
    assert len(res.epochs) == 1 and res.epochs[0]["diverged"] and math.isnan(res.epochs[0]["test_acc"])


def test_evaluate_matches_manual(digits):
    model = mlp(64, [16], 10)
    initialize(model, "he", generator=torch.Generator().manual_seed(0))
    loss, acc = evaluate(model, digits.x_test, digits.y_test, batch_size=50)
    with torch.no_grad():
        logits = model(digits.x_test)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, digits.y_test).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == digits.y_test).double().mean().item(), abs=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0), "lr must be a positive number"),
    (dict(lr=float("nan")), "lr must be a positive number"),
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(batch_size=-1), "batch_size must be a positive integer"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'; choose from: sgd, adam"),
    (dict(momentum=1.5), "momentum"),
])
def test_train_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_from_a_run_record():
    """A sweep's run parameters (and a config.json's "train") carry other keys too; those are ignored."""
    record = {"epochs": 3, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "optimizer": "sgd", "diverge_loss": 50.0,
              "init": "he", "seed": 4, "dataset": "digits"}
    assert TrainConfig.from_dict(record) == TrainConfig(epochs=3, batch_size=32, lr=0.1, momentum=0.9, diverge_loss=50.0)
    assert TrainConfig.from_dict({}) == TrainConfig()
