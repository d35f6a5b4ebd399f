"""The batched engine against the single-model loop it replaces.

Tolerances: the engine computes each model's forward and backward with batched matmuls
(``baddbmm``/``bmm``) and its own cross-entropy, where ``train_model`` uses ``addmm`` and autograd.
Same formulas, same float32 inputs, different summation order: per-op differences are ~1 ulp
(~6e-8 relative); over a few dozen SGD steps on these small, well-conditioned runs they stay
below ~1e-6 (measured: max |Δloss| ≈ 5e-7). rtol 1e-4 on losses and atol 1e-5 on weights leave
two orders of margin while still failing on any real difference (a wrong batch, a wrong
gradient, a missed update moves losses by 1e-3 or more within a step or two). Adam is tested
at small lr: at lr≈0.1 it divides rounding noise in near-zero gradients by sqrt(v) and turns
it into O(lr) steps, so both implementations drift apart chaotically (measured, not a bug).
"""
import numpy as np
import pytest
import torch

from initlab.training.mlp_engine import Population, bytes_per_model, default_max_models, mlp_layout, train_population
from initlab.experiments.compare import CompareSpec, build_model
from initlab.models import mlp
from initlab.schemes import parse_scheme
from initlab.training.loop import TrainConfig, train_model

RTOL_LOSS, ATOL_W = 1e-4, 1e-5


@pytest.fixture
def small(digits):
    """Digits cut to 320 training examples so a few epochs are a few dozen steps, and tests stay fast."""
    return type(digits)(name="digits", x_train=digits.x_train[:320], y_train=digits.y_train[:320],
                        x_test=digits.x_test, y_test=digits.y_test, num_classes=10,
                        image_shape=digits.image_shape)


def single_and_batched(data, runs, hidden=(32,), activation="relu", **kw):
    """runs: (init, seed, config) triples. Returns single-loop results/models and engine results/population."""
    spec = CompareSpec(dataset="digits", hidden=hidden, activation=activation)
    singles, models = [], []
    for init, seed, cfg in runs:
        m = build_model(spec, data, parse_scheme(init), seed, "cpu")
        singles.append(train_model(m, data, cfg, seed=seed))
        models.append(m)
    fresh = [build_model(spec, data, parse_scheme(init), seed, "cpu") for init, seed, _ in runs]
    got_modules = {}
    batched = train_population(fresh, data, [c for *_, c in runs], [s for _, s, _ in runs],
                               on_epoch=lambda k, row, get: got_modules.__setitem__(k, get()), **kw)
    return singles, models, batched, got_modules


def assert_same_run(single, model, batched, module):
    assert len(batched.step_losses) == len(single.step_losses)
    # after its first non-finite loss the single loop keeps stepping (NaN/inf weights); the engine
    # freezes the model and records NaN: only the steps up to the divergence are comparable
    upto = single.diverged_step + 1 if single.diverged else len(single.step_losses)
    np.testing.assert_allclose(batched.step_losses[:upto], single.step_losses[:upto], rtol=RTOL_LOSS, atol=1e-6)
    assert [r["epoch"] for r in batched.epochs] == [r["epoch"] for r in single.epochs]
    for a, b in zip(batched.epochs, single.epochs):
        assert a["diverged"] == b["diverged"]
        for key in ("train_loss", "test_loss", "test_acc"):
            np.testing.assert_allclose(a[key], b[key], rtol=RTOL_LOSS, atol=1e-6, err_msg=key)
    assert (batched.diverged, batched.diverged_epoch, batched.diverged_step) == \
        (single.diverged, single.diverged_epoch, single.diverged_step)
    if not single.diverged:
        sd, bd = model.state_dict(), module.state_dict()
        assert list(sd) == list(bd)  # same parameter names as mlp
        for name in sd:
            torch.testing.assert_close(bd[name], sd[name], rtol=0, atol=ATOL_W, msg=name)


@pytest.mark.parametrize("optimizer,momentum,activation", [
    ("sgd", 0.0, "relu"), ("sgd", 0.9, "tanh"), ("adam", 0.0, "relu"), ("sgd", 0.5, "gelu"),
])
def test_engine_equals_single_loop(small, optimizer, momentum, activation):
    lrs = (0.001, 0.003, 0.002, 0.001) if optimizer == "adam" else (0.05, 0.1, 0.02, 0.2)
    inits = ("zero", "he", "xavier", "random")
    runs = [(i, s, TrainConfig(epochs=3, lr=lr, momentum=momentum, optimizer=optimizer, batch_size=48))
            for i, s, lr in zip(inits, (0, 1, 2, 0), lrs)]  # 320/48: six full batches and one of 32
    singles, models, batched, modules = single_and_batched(small, runs, hidden=(32, 16), activation=activation)
    assert len(singles[0].step_losses) == 3 * 7
    for k in range(len(runs)):
        assert_same_run(singles[k], models[k], batched[k], modules[k])
    # different lr and init really give different runs (the test would not see a mix-up otherwise)
    assert len({round(float(r.step_losses[-1]), 5) for r in batched}) == len(runs)


def test_divergent_model_is_masked_and_others_unchanged(small):
    cfg = TrainConfig(epochs=3, lr=0.1, batch_size=32)
    runs = [("he", 0, cfg), ("normal(std=1e6)", 0, cfg), ("xavier", 1, cfg),
            ("he", 1, TrainConfig(epochs=3, lr=1e6, batch_size=32))]  # loss explodes, NaN at step 4
    singles, models, batched, modules = single_and_batched(small, runs, hidden=(32, 32))
    assert [r.diverged for r in singles] == [False, True, False, True]
    for k in range(len(runs)):
        assert_same_run(singles[k], models[k], batched[k], modules[k])
    bad = batched[1]
    assert not np.isfinite(bad.step_losses[bad.diverged_step]) and np.isnan(bad.step_losses[bad.diverged_step + 1:]).all()
    assert len(bad.epochs) == bad.diverged_epoch  # stops at the end of the epoch it diverged in


def test_frozen_model_keeps_its_parameters(small):
    """A model frozen at its first non-finite loss is not updated afterwards (no NaN written into it)."""
    cfg = TrainConfig(epochs=2, lr=0.1, batch_size=32)
    spec = CompareSpec(dataset="digits", hidden=(16,))
    model = build_model(spec, small, parse_scheme("he"), 0, "cpu")
    with torch.no_grad():
        model.fc2.bias[0] = float("inf")  # an infinite logit: loss is NaN/inf at step 0
    pop = Population([model, build_model(spec, small, parse_scheme("he"), 1, "cpu")], cfg, [0, 1])
    res = pop.train(small)
    assert res[0].diverged and res[0].diverged_step == 0 and not res[1].diverged
    for a, b in zip(pop.module(0).parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_groups_split_by_max_models_and_config(small):
    spec = CompareSpec(dataset="digits", hidden=(8,))
    runs = [("he", s, TrainConfig(epochs=1, lr=0.05, optimizer=o)) for s in range(3) for o in ("sgd", "adam")]
    models = [build_model(spec, small, parse_scheme(i), s, "cpu") for i, s, _ in runs]
    seen_epochs = []
    res = train_population(models, small, [c for *_, c in runs], [s for _, s, _ in runs], max_models=2,
                           after_epoch=seen_epochs.append)
    assert seen_epochs == [1, 1, 1, 1]  # sgd: 3 models in groups of 2 + 1; adam: the same
    for k, (init, seed, cfg) in enumerate(runs):
        single = train_model(build_model(spec, small, parse_scheme(init), seed, "cpu"), small, cfg, seed=seed)
        np.testing.assert_allclose(res[k].step_losses, single.step_losses, rtol=RTOL_LOSS)


def test_memory_budget_bounds_group_size():
    layout = mlp_layout(mlp(784, [128], 10))
    cfg = TrainConfig()
    per = bytes_per_model(layout, cfg, 60000)
    assert per > 4 * 2 * layout.num_params
    assert default_max_models(layout, cfg, 60000, memory_budget=10 * per) == 10
    assert default_max_models(layout, cfg, 60000, memory_budget=1) == 1
    adam = bytes_per_model(layout, TrainConfig(optimizer="adam"), 60000)
    assert adam == per + 4 * 2 * layout.num_params


def test_non_mlp_and_bad_arguments_are_one_line_errors(small):
    with pytest.raises(ValueError, match="engine='single'"):
        mlp_layout(torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10)))
    m = mlp(64, [8], 10)
    with pytest.raises(ValueError, match="may differ only in lr and momentum"):
        Population([m, m], [TrainConfig(), TrainConfig(batch_size=32)], [0, 1])
    with pytest.raises(ValueError, match="max_models must be a positive integer"):
        train_population([m], small, TrainConfig(), [0], max_models=0)
    with pytest.raises(ValueError, match="give one each"):
        train_population([m, m], small, TrainConfig(), [0])


def test_module_materializes_a_plain_mlp(small):
    models = [mlp(64, [8], 10, "tanh") for _ in range(3)]
    for i, m in enumerate(models):
        torch.nn.init.normal_(m.fc1.weight, generator=torch.Generator().manual_seed(i))
    pop = Population(models, TrainConfig(), [0, 1, 2])
    for k, m in enumerate(models):
        out = pop.module(k)
        assert isinstance(out, torch.nn.Sequential) and repr(out) == repr(m)
        x = small.x_test[:5]
        torch.testing.assert_close(out(x), m(x))
    with pytest.raises(ValueError, match="out of range"):
        pop.module(3)


def test_skipping_the_masks_while_all_models_live_changes_no_bit(small, monkeypatch):
    """On a CPU the step skips its torch.where masks while every model is alive (masks_needed):
    the weights after a few steps equal, bit for bit, those of the always-masking step."""
    import initlab.training.mlp_engine as engine

    spec = CompareSpec(dataset="digits", hidden=(32, 16))
    models = [build_model(spec, small, parse_scheme(i), s, "cpu") for i, s in (("he", 0), ("xavier", 1), ("random", 2))]
    for cfg in (TrainConfig(epochs=1, lr=0.1), TrainConfig(epochs=1, lr=0.1, momentum=0.9)):
        assert engine.masks_needed(torch.ones(3, dtype=torch.bool)) is False
        skipped = Population(models, cfg, [0, 1, 2])
        step = skipped.stepper(small.x_train, small.y_train)
        for _ in range(5):
            step()
        with monkeypatch.context() as m:
            m.setattr(engine, "masks_needed", lambda alive: True)
            masked = Population(models, cfg, [0, 1, 2])
            step = masked.stepper(small.x_train, small.y_train)
            for _ in range(5):
                step()
        for k in range(3):
            a, b = skipped.module(k).state_dict(), masked.module(k).state_dict()
            assert all(torch.equal(a[name], b[name]) for name in a)
        assert not torch.equal(skipped.module(0).fc1.weight, models[0].fc1.weight)  # it did train


def test_logsumexp_without_the_inf_guard_equals_torchs_where_finite():
    """logsumexp_finite is torch.logsumexp's own arithmetic minus its guard for infinite maxima:
    the same bits wherever the result is finite (large, small and mixed-scale logits)."""
    import initlab.training.mlp_engine as engine

    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0, 30.0, 1e4):
        x = torch.randn(12, 64, 10, generator=g) * scale
        assert torch.equal(engine.logsumexp_finite(x), torch.logsumexp(x, dim=2, keepdim=True))
    x[0, 0, 3] = float("inf")  # an infinite maximum: NaN here, where torch gives inf (the step then recomputes)
    assert torch.isnan(engine.logsumexp_finite(x)[0, 0, 0]) and torch.logsumexp(x, 2)[0, 0] == float("inf")


def test_the_cpu_fast_path_changes_no_bit_when_models_diverge(small, monkeypatch):
    """The step's CPU shortcuts (no inf guard in logsumexp, cached -lr, no masks while all live)
    give the same step losses and weights as torch.logsumexp with masks at every step, also for a
    population in which models diverge: by lr 1e4 (NaN), and by an infinite logit of a class absent
    from the data (torch.logsumexp's guard makes that loss +inf, not NaN: the step must recompute)."""
    import initlab.training.mlp_engine as engine

    keep = small.y_train != 9
    data = type(small)(name="digits", x_train=small.x_train[keep], y_train=small.y_train[keep],
                       x_test=small.x_test, y_test=small.y_test, num_classes=10, image_shape=small.image_shape)
    spec = CompareSpec(dataset="digits", hidden=(32,))
    runs = [("random", 0), ("he", 1), ("xavier", 2), ("random", 3), ("he", 4)]
    configs = [TrainConfig(epochs=2, lr=lr) for lr in (0.05, 1e4, 0.05, 1e4, 0.05)]

    def train():
        models = [build_model(spec, data, parse_scheme(i), s, "cpu") for i, s in runs]
        with torch.no_grad():
            models[4].fc2.bias[9] = float("inf")
        mods = {}
        res = train_population(models, data, configs, [s for _, s in runs],
                               on_epoch=lambda k, row, get: mods.__setitem__(k, get()))
        return res, mods

    fast, fast_mods = train()
    with monkeypatch.context() as m:
        m.setattr(engine, "logsumexp_finite", lambda x: torch.logsumexp(x, dim=2, keepdim=True))
        m.setattr(engine, "masks_needed", lambda alive: True)
        ref, ref_mods = train()
    assert [r.diverged for r in fast] == [False, True, False, True, True]
    assert fast[4].step_losses[0] == float("inf")
    for a, b in zip(fast, ref):
        assert a.step_losses.tobytes() == b.step_losses.tobytes()
        assert (a.diverged_epoch, a.diverged_step) == (b.diverged_epoch, b.diverged_step)
    for k in fast_mods:
        assert all(torch.equal(v, ref_mods[k].state_dict()[n]) for n, v in fast_mods[k].state_dict().items())
