"""The torch.func population engine against the single-model loop, for several architectures.

Tolerances as in test_engine.py: vmap runs the K models' layers as batched matmuls and grouped
convolutions, ``train_model`` as plain ones; same formulas and float32 inputs, different
summation order (~1 ulp per op). Over the ten steps of these runs they agree to well under 1e-6
(measured: max |Δloss| 2.4e-7; max |Δ| of parameters and buffers, BatchNorm running statistics
included, 3.6e-7), so rtol 1e-4 on losses and atol 1e-5 on parameters and buffers leave two orders of margin while a
wrong batch, gradient or update (≥1e-3 within a step) still fails. Adam runs avoid parameters
whose gradient is ~0 by symmetry (a conv bias before BatchNorm, attention's key bias): Adam divides
rounding noise there by sqrt(v) and both implementations drift apart chaotically (as in
test_engine.py; measured, not a bug). Data are tiny synthetic sets
(200 training examples) so the whole module runs in seconds.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from initlab.data import Dataset
from initlab.training.func_engine import (
    FuncPopulation,
    architecture_key,
    bytes_per_model_func,
    default_max_models,
    train_func_population,
    vmap_problem,
)
from initlab.training.loop import TrainConfig, train_model

RTOL_LOSS, ATOL_W = 1e-4, 1e-5
N_TRAIN, N_TEST, C = 200, 64, 4

# In eval mode nn.MultiheadAttention / TransformerEncoderLayer take their fused fast path, which has
# no vmap batching rule: vmap runs it model by model (correct, slower) and warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    # these runs are tiny: on a shared 2-core machine two OpenMP threads spend most of the time
    # waiting for each other (measured: 4 s for this module with 1 thread, 10-40 s with 2);
    # conftest restores the thread count afterwards
    torch.set_num_threads(1)


def toy(shape: tuple[int, ...], seed: int = 0) -> Dataset:
    """A learnable synthetic set: labels from a fixed random linear map of the inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_TEST, *shape, generator=g)
    w = torch.randn(math.prod(shape), C, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    return Dataset("toy", x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], C, shape[-2:])


class ResidualMLP(nn.Module):
    def __init__(self, d_in=16, width=24):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(2))
        self.out = nn.Linear(width, C)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class TinyTransformer(nn.Module):
    """Tokens = rows of a (4, 4) input; one pre-norm attention block (nn.MultiheadAttention) and an MLP."""

    def __init__(self, d=8, layer=False):
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.pos = nn.Parameter(torch.randn(4, d) * 0.1)
        self.encoder = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True) if layer else None
        if not layer:
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, d))
        self.head = nn.Linear(d, C)

    def forward(self, x):
        h = self.embed(x.view(x.shape[0], 4, 4)) + self.pos
        if self.encoder is not None:
            h = self.encoder(h)
        else:
            a = self.norm1(h)
            h = h + self.attn(a, a, a, need_weights=False)[0]
            h = h + self.mlp(self.norm2(h))
        return self.head(h.mean(1))


def cnn(norm="batch"):
    layer = {"batch": lambda: nn.BatchNorm2d(8), "group": lambda: nn.GroupNorm(2, 8)}[norm]
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), layer(), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, C))


def mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, C))


ARCHS = {  # name -> (factory, input shape)
    "mlp": (mlp, (16,)),
    "cnn_bn": (cnn, (1, 8, 8)),
    "cnn_gn": (lambda: cnn("group"), (1, 8, 8)),
    "resmlp_ln": (ResidualMLP, (16,)),
    "transformer_mha": (TinyTransformer, (16,)),
    "transformer_layer": (lambda: TinyTransformer(layer=True), (16,)),
}


def build(factory, seed):
    torch.manual_seed(1000 + seed)  # the tests' own init; the engine copies whatever it is given
    return factory()


def single_and_batched(factory, data, runs, **kw):
    """runs: (init seed, data seed, config). Single-loop results/models, engine results/modules at the end."""
    singles, models = [], []
    for init, seed, cfg in runs:
        m = build(factory, init)
        singles.append(train_model(m, data, cfg, seed=seed))
        models.append(m)
    got = {}
    batched = train_func_population([build(factory, i) for i, _, _ in runs], data, [c for *_, c in runs],
                                    [s for _, s, _ in runs], on_epoch=lambda k, row, get: got.__setitem__(k, get()), **kw)
    return singles, models, batched, got


def assert_same_run(single, model, batched, module):
    assert len(batched.step_losses) == len(single.step_losses)
    # after its first non-finite loss the single loop keeps stepping (NaN weights); the engine
    # freezes the model and records NaN: only the steps up to the divergence are comparable
    upto = len(single.step_losses) if single.diverged_step is None else single.diverged_step + 1
    np.testing.assert_allclose(batched.step_losses[:upto], single.step_losses[:upto], rtol=RTOL_LOSS, atol=1e-6)
    assert [r["epoch"] for r in batched.epochs] == [r["epoch"] for r in single.epochs]
    for a, b in zip(batched.epochs, single.epochs):
        assert a["diverged"] == b["diverged"]
        for key in ("train_loss", "test_loss", "test_acc"):
            np.testing.assert_allclose(a[key], b[key], rtol=RTOL_LOSS, atol=1e-6, err_msg=key)
    assert (batched.diverged, batched.diverged_epoch, batched.diverged_step, batched.diverge_reason) == \
        (single.diverged, single.diverged_epoch, single.diverged_step, single.diverge_reason)
    if not single.diverged:
        sd, bd = model.state_dict(), module.state_dict()
        assert list(sd) == list(bd)
        for name in sd:  # parameters and buffers (BatchNorm running_mean/var, num_batches_tracked)
            torch.testing.assert_close(bd[name], sd[name], rtol=0, atol=ATOL_W, msg=name)


@pytest.mark.parametrize("arch,optimizer,momentum", [
    ("mlp", "adam", 0.0), ("cnn_bn", "sgd", 0.9), ("cnn_gn", "adam", 0.0), ("resmlp_ln", "sgd", 0.5),
    ("transformer_mha", "sgd", 0.0), ("transformer_layer", "sgd", 0.9),
])
def test_engine_equals_single_loop(arch, optimizer, momentum):
    factory, shape = ARCHS[arch]
    data = toy(shape)
    lrs = (0.002, 0.005, 0.001) if optimizer == "adam" else (0.05, 0.1, 0.02)
    runs = [(i, s, TrainConfig(epochs=2, lr=lr, momentum=momentum, optimizer=optimizer, batch_size=48))
            for i, s, lr in zip((0, 1, 2), (0, 1, 0), lrs)]  # 200/48: four full batches and one of 8
    singles, models, batched, modules = single_and_batched(factory, data, runs)
    assert len(singles[0].step_losses) == 2 * 5
    for k in range(len(runs)):
        assert_same_run(singles[k], models[k], batched[k], modules[k])
    # different inits, seeds and lrs really give different runs (a mix-up would not go unseen)
    assert len({round(float(r.step_losses[-1]), 5) for r in batched}) == len(runs)


def test_batchnorm_running_statistics_move_per_model():
    data = toy((1, 8, 8))
    cfg = TrainConfig(epochs=1, lr=0.05, batch_size=50)
    singles, models, _, modules = single_and_batched(cnn, data, [(0, 0, cfg), (1, 1, cfg)])
    for k in range(2):
        bn = modules[k][1]
        assert int(bn.num_batches_tracked) == 4 and not torch.allclose(bn.running_mean, torch.zeros(8))
        torch.testing.assert_close(bn.running_var, models[k][1].running_var, rtol=0, atol=ATOL_W)
    assert not torch.allclose(modules[0][1].running_mean, modules[1][1].running_mean)


def test_divergent_model_is_masked_and_others_unchanged():
    data = toy((16,))
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=40)
    runs = [(0, 0, cfg), (1, 0, TrainConfig(epochs=3, lr=1e12, batch_size=40)), (2, 1, cfg)]
    singles, models, batched, modules = single_and_batched(mlp, data, runs)
    assert [r.diverged for r in singles] == [False, True, False]
    assert singles[1].diverge_reason == "non-finite loss"
    for k in range(len(runs)):
        assert_same_run(singles[k], models[k], batched[k], modules[k])
    bad = batched[1]
    assert np.isnan(bad.step_losses[bad.diverged_step + 1:]).all()
    assert len(bad.epochs) == bad.diverged_epoch  # stops at the end of the epoch it diverged in


def test_nonfinite_activation_in_evaluation_names_the_module_like_train_model():
    """A negative BatchNorm running_var: training (batch statistics) is finite, evaluation is NaN at '1'."""
    data = toy((1, 8, 8))
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=50)

    def factory():
        m = cnn()
        if torch.initial_seed() == 1001:  # the second model only
            m[1].running_var.fill_(-10.0)
        return m

    singles, models, batched, modules = single_and_batched(factory, data, [(0, 0, cfg), (1, 1, cfg), (2, 0, cfg)])
    assert singles[1].diverge_reason == "non-finite activation (1)" and singles[1].diverged_epoch == 1
    for k in range(3):
        assert_same_run(singles[k], models[k], batched[k], modules[k])


def test_frozen_model_keeps_its_parameters_and_buffers():
    data = toy((1, 8, 8))
    model = build(cnn, 0)
    with torch.no_grad():
        model[-1].bias[0] = float("inf")  # an infinite logit: the loss is NaN/inf at step 0
    pop = FuncPopulation([model, build(cnn, 1)], TrainConfig(epochs=2, lr=0.1, batch_size=50), [0, 1])
    res = pop.train(data)
    assert res[0].diverged and res[0].diverged_step == 0 and not res[1].diverged
    for (name, a), b in zip(pop.module(0).state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_callbacks_order_and_get_module():
    data = toy((16,))
    calls = []
    models = [build(mlp, k) for k in range(3)]
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64)
    train_func_population(models, data, cfg, [0, 1, 2],
                          on_epoch=lambda k, row, get: calls.append((row["epoch"], k, type(get()).__name__)),
                          after_epoch=lambda e: calls.append(("after", e)))
    assert calls == [(1, 0, "Sequential"), (1, 1, "Sequential"), (1, 2, "Sequential"), ("after", 1),
                     (2, 0, "Sequential"), (2, 1, "Sequential"), (2, 2, "Sequential"), ("after", 2)]
    for m, fresh in zip(models, (build(mlp, k) for k in range(3))):  # the models given are not modified
        assert all(torch.equal(a, b) for a, b in zip(m.parameters(), fresh.parameters()))


def test_groups_by_architecture_and_config_and_max_models():
    data = toy((1, 8, 8))
    flat = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, C))  # noqa: E731
    factories = [cnn, flat, cnn, flat, cnn]
    cfgs = [TrainConfig(epochs=1, lr=0.05, batch_size=50, optimizer=o) for o in ("sgd", "sgd", "sgd", "sgd", "adam")]
    seen = []
    res = train_func_population([build(f, k) for k, f in enumerate(factories)], data, cfgs, [0, 1, 2, 3, 4],
                                max_models=1, after_epoch=seen.append)
    assert seen == [1] * 5  # cnn/sgd: 2 models in groups of 1, flat/sgd: 2, cnn/adam: 1
    for k, (f, cfg) in enumerate(zip(factories, cfgs)):
        single = train_model(build(f, k), data, cfg, seed=k)
        np.testing.assert_allclose(res[k].step_losses, single.step_losses, rtol=RTOL_LOSS)


class ItemControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, C)

    def forward(self, x):
        return self.fc(x) if x.sum().item() > 0 else self.fc(-x)


@pytest.mark.parametrize("model,match", [
    (nn.Sequential(nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, C)), "random numbers"),
    (ItemControlFlow(), r"\.item\(\)"),
    (nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8, momentum=None), nn.Linear(8, C)), "momentum=None"),
])
def test_non_vmappable_models_give_a_one_line_reason(model, match):
    data = toy((16,))
    reason = vmap_problem(model, data.x_train[:2], data.y_train[:2])
    assert reason is not None and "\n" not in reason
    assert __import__("re").search(match, reason)
    with pytest.raises(ValueError, match=match):
        train_func_population([model], data, TrainConfig(epochs=1), [0])


def test_vmappable_models_have_no_problem():
    for factory, shape in ARCHS.values():
        data = toy(shape)
        assert vmap_problem(build(factory, 0), data.x_train[:2], data.y_train[:2]) is None


def test_mismatched_architectures_and_bad_arguments_are_one_line_errors():
    data = toy((16,))
    other = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, C))
    with pytest.raises(ValueError, match="share one architecture"):  # same shapes, another activation
        FuncPopulation([mlp(), other], TrainConfig(), [0, 1])
    with pytest.raises(ValueError, match="share one architecture"):
        FuncPopulation([mlp(), nn.Sequential(nn.Linear(16, C))], TrainConfig(), [0, 1])
    assert architecture_key(mlp()) == architecture_key(mlp())
    with pytest.raises(ValueError, match="may differ only in lr and momentum"):
        FuncPopulation([mlp(), mlp()], [TrainConfig(), TrainConfig(batch_size=32)], [0, 1])
    with pytest.raises(ValueError, match="max_models must be a positive integer"):
        train_func_population([mlp()], data, TrainConfig(), [0], max_models=0)
    with pytest.raises(ValueError, match="give one each"):
        train_func_population([mlp(), mlp()], data, TrainConfig(), [0])
    with pytest.raises(ValueError, match="out of range"):
        FuncPopulation([mlp()], TrainConfig(), [0]).module(1)


def test_module_materializes_a_plain_copy():
    data = toy((1, 8, 8))
    models = [build(cnn, k) for k in range(2)]
    pop = FuncPopulation(models, TrainConfig(), [0, 1])
    for k, m in enumerate(models):
        out = pop.module(k)
        assert type(out) is type(m) and repr(out) == repr(m) and out.training
        m.eval(), out.eval()
        torch.testing.assert_close(out(data.x_test[:5]), m(data.x_test[:5]))


def test_memory_estimate_scales_with_optimizer_and_budget():
    x = toy((1, 8, 8)).x_train[:4]
    model, cfg = cnn(), TrainConfig()
    n_params = sum(p.numel() for p in model.parameters())
    per = bytes_per_model_func(model, cfg, x)
    assert per > 4 * 2 * n_params
    assert bytes_per_model_func(model, TrainConfig(optimizer="adam"), x) == per + 4 * 2 * n_params
    assert bytes_per_model_func(model, TrainConfig(batch_size=128), x) > per
    assert default_max_models(model, cfg, x, memory_budget=10 * per) == 10
    assert default_max_models(model, cfg, x, memory_budget=1) == 1
