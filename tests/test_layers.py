"""Per-layer-type fan conventions, measured: the variance each layer's output (or input gradient)
has after initialize, for every parametrized layer type, plus parametrized weights and lazy modules.

Every statistical check averages an estimate over R independent (init seed, input seed) pairs and
compares the mean with the exact expectation within K standard errors, the SE being the spread of
the R values over sqrt(R) (a t statistic with R - 1 = 23 degrees of freedom: |t| > 5 has
probability below 1e-4 when the convention is right). The "would miss" tests show the same
criterion rejects torch's fan reading where the docstrings say it differs (|t| > K), so the
tolerance has teeth. Seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from initlab.schemes import fan_in_and_fan_out, initialize, initialize_with_report

R, K = 24, 5.0
FWD = "variance_scaling(scale=1.0,mode=fan_in,distribution=normal)"  # Var(W) = 1 / fan_in
BWD = "variance_scaling(scale=1.0,mode=fan_out,distribution=normal)"  # Var(W) = 1 / fan_out


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def t_stat(values: list[float], target: float) -> float:
    v = torch.tensor(values, dtype=torch.float64)
    return float((v.mean() - target) / (v.std() / math.sqrt(len(v))))


def assert_mean(values: list[float], target: float) -> None:
    t = t_stat(values, target)
    assert abs(t) <= K, f"mean {sum(values) / len(values):.4f} vs {target}: t = {t:.1f}"


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


def forward_var(make, inputs, scheme: str = FWD, crop=lambda y: y, **kw) -> list[float]:
    """E[y²] of a freshly initialized layer on unit-variance inputs, once per seed."""
    out = []
    for r in range(R):
        layer = initialize(make(), scheme, generator=gen(r), **kw)
        with torch.no_grad():
            y = layer(*inputs(10_000 + r))
        out.append(float(crop(y).double().pow(2).mean()))
    return out


# --------------------------------------------------------------------------- Linear, Bilinear, Conv


@pytest.mark.parametrize(
    "make,inputs",
    [
        (lambda: nn.Linear(48, 32), lambda s: (randn(64, 48, seed=s),)),
        # y_k = Σ_ij x1_i W_kij x2_j: in1·in2 unit-variance terms, fan_in = in1·in2
        (lambda: nn.Bilinear(12, 10, 8), lambda s: (randn(64, 12, seed=s), randn(64, 10, seed=s + 1))),
        # no padding: every output sums (in/groups)·∏k inputs, stride or not
        (lambda: nn.Conv1d(6, 8, 5, stride=2, groups=2), lambda s: (randn(8, 6, 40, seed=s),)),
        (lambda: nn.Conv2d(4, 6, 3, stride=2, groups=2), lambda s: (randn(8, 4, 16, 16, seed=s),)),
        (lambda: nn.Conv3d(4, 4, 2, groups=4), lambda s: (randn(4, 4, 6, 6, 6, seed=s),)),
    ],
    ids=["linear", "bilinear", "conv1d", "conv2d", "conv3d"],
)
def test_forward_variance_is_preserved(make, inputs):
    assert_mean(forward_var(make, inputs), 1.0)


# --------------------------------------------------------------------------- ConvTranspose


def interior(kernel, stride):
    """Crop a ConvTranspose output (no padding) to positions all of whose taps hit inputs.

    Output o = i·s + j; for o in [k-1, (L-1)·s] every j ≡ o (mod s) has an input i, so o gets
    #{j < k: j ≡ o mod s} taps; a window whose length is a multiple of s averages k/s exactly.
    """

    def crop(y):
        for d, (k, s) in enumerate(zip(kernel, stride)):
            dim = 2 + d
            stop = y.shape[dim] - (k - 1)  # last input's taps end at (L-1)·s + k - 1
            length = (stop - (k - 1)) // s * s
            y = y.narrow(dim, k - 1, length)
        return y

    return crop


CONV_T = [
    # (make, input shape, kernel, stride)
    (lambda: nn.ConvTranspose1d(6, 4, 4, stride=2, groups=2), (8, 6, 20), (4,), (2,)),
    (lambda: nn.ConvTranspose1d(4, 4, 3, stride=2), (8, 4, 20), (3,), (2,)),  # 1.5 taps on average
    (lambda: nn.ConvTranspose2d(4, 6, (4, 3), stride=(2, 1), groups=2), (4, 4, 10, 10), (4, 3), (2, 1)),
    (lambda: nn.ConvTranspose3d(2, 4, 2, stride=2), (2, 2, 5, 5, 5), (2, 2, 2), (2, 2, 2)),
]


@pytest.mark.parametrize("make,shape,kernel,stride", CONV_T, ids=["1d_groups", "1d_k3s2", "2d", "3d"])
def test_conv_transpose_forward_variance(make, shape, kernel, stride):
    values = forward_var(make, lambda s: (randn(*shape, seed=s),), crop=interior(kernel, stride))
    assert_mean(values, 1.0)


@pytest.mark.parametrize("make,shape,kernel,stride", CONV_T, ids=["1d_groups", "1d_k3s2", "2d", "3d"])
def test_conv_transpose_backward_variance_with_fan_out(make, shape, kernel, stride):
    # every input's ∏k taps land in the output, in out/groups channels: fan_out = (out/g)·∏k
    values = []
    for r in range(R):
        layer = initialize(make(), BWD, generator=gen(r))
        x = randn(*shape, seed=10_000 + r).requires_grad_()
        y = layer(x)
        y.backward(randn(*y.shape, seed=20_000 + r))
        values.append(float(x.grad.double().pow(2).mean()))
    assert_mean(values, 1.0)


def test_conv_transpose_torch_fans_would_miss():
    # torch reads (in, out/g, *k) as (out, in, *k): fan_in (out/g)·∏k = 16·4 = 64 instead of
    # (in/g)·∏(k/s) = 8·2 = 16; under torch's fan the measured variance would be 16/64
    make = lambda: nn.ConvTranspose1d(16, 32, 4, stride=2, groups=2)  # noqa: E731
    w = make().weight
    torch_fan_in = nn.init._calculate_fan_in_and_fan_out(w)[0]
    assert torch_fan_in == 64 and fan_in_and_fan_out(w) == (64, 64)  # the shape alone: torch's reading
    _, report = initialize_with_report(make(), FWD, generator=gen(0))
    assert report.set_index("parameter").loc["weight", ["fan_in", "fan_out"]].tolist() == [16, 64]
    values = forward_var(make, lambda s: (randn(4, 16, 20, seed=s),), crop=interior((4,), (2,)))
    assert_mean(values, 1.0)
    assert abs(t_stat([v * 16 / torch_fan_in for v in values], 1.0)) > K


def test_conv_transpose_report_fans_non_integer():
    _, report = initialize_with_report(nn.ConvTranspose1d(4, 4, 3, stride=2), "he", generator=gen(0))
    row = report.set_index("parameter").loc["weight"]
    assert (row.fan_in, row.fan_out) == (6.0, 12)


# --------------------------------------------------------------------------- Embedding


def test_embedding_lookup_variance_and_padding_row():
    make = lambda: nn.Embedding(100, 16, padding_idx=3)  # noqa: E731
    values = forward_var(make, lambda s: (torch.randint(0, 100, (256,), generator=gen(s)),),
                         crop=lambda y: y[y.abs().sum(1) > 0])  # rows of the padding index are zero
    assert_mean(values, 1.0)  # fan_in = 1: a lookup copies one row
    m = initialize(make(), "normal(std=0.02)", generator=gen(0))
    assert not m.weight[3].any()
    rows = m.weight.detach()[torch.arange(100) != 3]
    assert abs(float(rows.std()) - 0.02) < K * 0.02 / math.sqrt(2 * rows.numel())  # SE of a normal's std


@pytest.mark.parametrize("bag", [1, 4])
def test_embedding_bag_sum_variance(bag):
    # fans are per looked-up row; a "sum" bag of n rows drawn with replacement from N has
    # E[y²] = Var(W)·(n + n(n-1)/N): n rows plus the covariance of index collisions
    n_rows = 200

    def inputs(s):
        idx = torch.randint(0, n_rows, (64 * bag,), generator=gen(s))
        return idx, torch.arange(0, 64 * bag, bag)

    values = forward_var(lambda: nn.EmbeddingBag(n_rows, 16, mode="sum"), inputs)
    assert_mean(values, bag + bag * (bag - 1) / n_rows)


def test_embedding_torch_fans_would_miss():
    # torch's fan_in for (num, dim) is dim: Var(W) = 1/16 instead of 1
    values = forward_var(lambda: nn.Embedding(100, 16), lambda s: (torch.randint(0, 100, (256,), generator=gen(s)),))
    assert abs(t_stat([v / 16 for v in values], 1.0)) > K


# --------------------------------------------------------------------------- recurrent


RNNS = {
    "lstm": lambda: nn.LSTM(10, 16, num_layers=2, bidirectional=True),
    "lstm_proj": lambda: nn.LSTM(10, 16, num_layers=2, proj_size=6),
    "gru": lambda: nn.GRU(10, 16, num_layers=2),
    "rnn": lambda: nn.RNN(10, 16, bidirectional=True),
    "lstm_cell": lambda: nn.LSTMCell(10, 16),
    "gru_cell": lambda: nn.GRUCell(10, 16),
    "rnn_cell": lambda: nn.RNNCell(10, 16),
}


def gate_blocks(module):
    """(name, block) of every gate block of every weight_ih / weight_hh, as torch stacks them."""
    hidden = module.hidden_size
    for name, w in module.named_parameters():
        if name.startswith(("weight_ih", "weight_hh")):
            for g in range(w.shape[0] // hidden):
                yield f"{name}[{g}]", w[g * hidden:(g + 1) * hidden]


@pytest.mark.parametrize("kind", list(RNNS))
@pytest.mark.parametrize("scheme,direction", [(FWD, "forward"), (BWD, "backward")])
def test_each_gate_block_preserves_variance(kind, scheme, direction):
    # forward: a gate's pre-activation from unit-variance inputs, W_gate x; backward: the
    # gradient a gate sends to its input from unit-variance gradients, W_gateᵀ g
    values: dict[str, list[float]] = {}
    for r in range(R):
        m = initialize(RNNS[kind](), scheme, generator=gen(r))
        for i, (name, block) in enumerate(gate_blocks(m)):
            h, n = block.shape
            with torch.no_grad():
                if direction == "forward":
                    z = randn(256, n, seed=10_000 + 100 * r + i) @ block.T
                else:
                    z = randn(256, h, seed=10_000 + 100 * r + i) @ block
            values.setdefault(name, []).append(float(z.double().pow(2).mean()))
    for name, v in values.items():
        t = t_stat(v, 1.0)
        assert abs(t) <= K, (name, sum(v) / R, t)


def test_stacked_gate_fan_out_would_miss():
    # torch reads the stacked (4·hidden, in) LSTM matrix: fan_out 64 instead of 16
    values = []
    for r in range(R):
        w = initialize(nn.LSTMCell(10, 16), BWD, generator=gen(r)).weight_ih.detach()[:16]
        values.append(float((randn(256, 16, seed=r + 500) @ w).double().pow(2).mean()) * 16 / 64)
    assert abs(t_stat(values, 1.0)) > K


def test_rnn_relu_module_forward_variance():
    # one step from h0 = 0: h = relu(W_ih x); W symmetric, so E[relu(z)²] = E[z²]/2 exactly
    make = lambda: nn.RNN(32, 64, nonlinearity="relu")  # noqa: E731
    assert_mean(forward_var(make, lambda s: (randn(1, 128, 32, seed=s),), crop=lambda y: y[0]), 0.5)


def test_recurrent_orthogonal_and_forget_bias():
    m = initialize(nn.LSTM(6, 8, num_layers=2, bidirectional=True), "xavier", recurrent="orthogonal",
                   forget_bias=1.0, generator=gen(0))
    for name, p in m.named_parameters():
        if name.startswith("weight_hh"):
            for g in range(4):
                block = p[g * 8:(g + 1) * 8]
                assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5), name
        if name.startswith("bias_ih"):
            assert torch.equal(p[8:16], torch.ones(8)) and not p[:8].any() and not p[16:].any()
        if name.startswith("bias_hh"):
            assert not p.any()  # bias_ih + bias_hh = 1 on the forget gate, 0 elsewhere


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("kdim,vdim", [(None, None), (5, 7)])
def test_attention_projections_preserve_variance(kdim, vdim):
    e = 16
    values: dict[str, list[float]] = {}
    for r in range(R):
        m = initialize(nn.MultiheadAttention(e, 4, kdim=kdim, vdim=vdim, add_bias_kv=True), FWD, generator=gen(r))
        if kdim is None:
            blocks = dict(zip("qkv", m.in_proj_weight.detach().split(e)))
        else:
            blocks = {"q": m.q_proj_weight, "k": m.k_proj_weight, "v": m.v_proj_weight}
        blocks["out"] = m.out_proj.weight
        for i, (part, w) in enumerate(blocks.items()):
            z = randn(256, w.shape[1], seed=10_000 + 10 * r + i) @ w.detach().T
            values.setdefault(part, []).append(float(z.double().pow(2).mean()))
        assert not m.in_proj_bias.any() and not m.bias_k.any() and not m.bias_v.any()
    for part, v in values.items():
        assert abs(t_stat(v, 1.0)) <= K, part


def test_attention_in_proj_torch_fans_would_miss():
    # xavier on the whole (3E, E) in_proj_weight (torch's own init) gives Var 2/(4E), not 2/(2E)
    _, report = initialize_with_report(nn.MultiheadAttention(16, 4), "xavier_normal", generator=gen(0))
    rows = report.set_index("parameter")
    for part in "qkv":
        assert rows.loc[f"in_proj_weight[{part}]", "fan_out"] == 16
        std = rows.loc[f"in_proj_weight[{part}]", "std_after"]
        assert abs(std / math.sqrt(2 / 32) - 1) < K * math.sqrt(2 / (4 * 256))  # SE of a normal's std
        assert abs(std / math.sqrt(2 / 64) - 1) > K * math.sqrt(2 / (4 * 256))


# --------------------------------------------------------------------------- norms, PReLU


NORMS = [
    lambda: nn.BatchNorm1d(8), lambda: nn.BatchNorm2d(8), lambda: nn.BatchNorm3d(8), lambda: nn.SyncBatchNorm(8),
    lambda: nn.InstanceNorm1d(8, affine=True), lambda: nn.InstanceNorm2d(8, affine=True),
    lambda: nn.InstanceNorm3d(8, affine=True), lambda: nn.LayerNorm(8), lambda: nn.GroupNorm(2, 8),
] + ([lambda: nn.RMSNorm(8)] if hasattr(nn, "RMSNorm") else [])


@pytest.mark.parametrize("make", NORMS)
def test_norms_weight_one_bias_zero(make):
    m = make()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(generator=gen(1))
    m = nn.Sequential(nn.Linear(8, 8), m)
    _, report = initialize_with_report(m, "he", generator=gen(0))
    assert torch.equal(m[1].weight, torch.ones(8))
    if getattr(m[1], "bias", None) is not None:
        assert not m[1].bias.any()
    assert set(report.rule[report.parameter.str.startswith("1.")]) == {"(layer default)"}


def test_norm_rule_scales_output():
    m = initialize(nn.LayerNorm(64), {"LayerNorm": "constant(value=0.5)"})
    y = m(randn(32, 64, seed=0))
    assert torch.allclose(y.std(1, unbiased=False), torch.full((32,), 0.5), atol=1e-3)


def test_prelu_keeps_its_init():
    m = nn.Sequential(nn.Linear(3, 3), nn.PReLU(3, init=0.1))
    with torch.no_grad():
        m[1].weight.fill_(7)
    initialize(m, "he", generator=gen(0))
    assert torch.allclose(m[1].weight, torch.full((3,), 0.1))


# --------------------------------------------------------------------------- parametrized weights


class Double(nn.Module):
    def forward(self, x):
        return 2 * x

    def right_inverse(self, x):
        return x / 2


class Symmetric(nn.Module):  # no right_inverse
    def forward(self, x):
        return x.triu() + x.triu(1).T


def plain_draw(shape, scheme, seed):
    """What the scheme draws for a plain Linear of this shape (same generator stream)."""
    return initialize(nn.Linear(shape[1], shape[0]), scheme, generator=gen(seed)).weight.detach()


@pytest.mark.parametrize("wrap", [
    lambda m: parametrizations.weight_norm(m),
    lambda m: parametrizations.weight_norm(m, dim=None),
    lambda m: parametrize.register_parametrization(m, "weight", Double()) or m,
], ids=["weight_norm", "weight_norm_dim_none", "custom_right_inverse"])
def test_parametrized_effective_weight_is_the_draw(wrap):
    m = wrap(nn.Linear(32, 24))
    _, report = initialize_with_report(m, "kaiming_normal", generator=gen(3))
    assert torch.allclose(m.weight, plain_draw((24, 32), "kaiming_normal", 3), rtol=1e-5, atol=1e-6)
    assert list(report.parameter) == ["weight", "bias"] and "parametrize" in report.note[0]
    assert len(list(m.parameters())) == len({id(p) for p in m.parameters()})  # nothing added


def test_old_weight_norm_effective_weight_is_the_draw():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m = torch.nn.utils.weight_norm(nn.Linear(32, 24))
    initialize(m, "kaiming_normal", generator=gen(3))
    want = plain_draw((24, 32), "kaiming_normal", 3)
    assert torch.allclose(m.weight, want, rtol=1e-5, atol=1e-6)
    m(randn(2, 32, seed=0))  # the hook recomputes weight from weight_g / weight_v
    assert torch.allclose(m.weight, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("old", [False, True])
def test_spectral_norm_effective_weight_is_draw_over_sigma(old):
    if old:
        m = torch.nn.utils.spectral_norm(nn.Linear(32, 24))
    else:
        m = parametrizations.spectral_norm(nn.Linear(32, 24))
    _, report = initialize_with_report(m, "kaiming_normal", generator=gen(3))
    draw = plain_draw((24, 32), "kaiming_normal", 3)
    sigma = torch.linalg.matrix_norm(draw, ord=2)
    m.eval()  # read without a further power-iteration step
    with torch.no_grad():
        eff = m(torch.eye(32)).T - m.bias[:, None]
    assert torch.allclose(eff, draw / sigma, rtol=1e-4, atol=1e-6)
    assert abs(float(torch.linalg.matrix_norm(eff, ord=2)) - 1) < 1e-5  # the scheme's scale is gone
    m.train()
    m(torch.zeros(1, 32))  # a training step's power iteration starts at the exact singular pair
    assert torch.allclose(m.weight, draw / sigma, rtol=1e-4, atol=1e-6)
    assert "draw / σ(draw)" in report.note[0]
    assert report.std_after[0] == pytest.approx(float((draw / sigma).std()), rel=1e-3)


def test_parametrization_without_right_inverse_writes_original():
    m = parametrize.register_parametrization(nn.Linear(8, 8), "weight", Symmetric())
    _, report = initialize_with_report(m, "kaiming_normal", generator=gen(3))
    draw = plain_draw((8, 8), "kaiming_normal", 3)
    assert torch.equal(m.parametrizations.weight.original, draw)
    assert torch.allclose(m.weight, draw.triu() + draw.triu(1).T)
    assert "no right_inverse in Symmetric: assumed identity" in report.note[0]


# --------------------------------------------------------------------------- lazy modules


@pytest.mark.parametrize("make,x", [
    (lambda: nn.LazyLinear(4), torch.zeros(2, 3)),
    (lambda: nn.LazyConv2d(4, 3), torch.zeros(1, 2, 5, 5)),
    (lambda: nn.LazyConvTranspose1d(4, 3), torch.zeros(1, 2, 5)),
    (lambda: nn.LazyBatchNorm1d(), torch.zeros(2, 3)),
])
def test_lazy_modules_ask_for_a_forward_pass(make, x):
    m = nn.Sequential(make())
    with pytest.raises(ValueError, match=r"^Lazy\w+ '0' has uninitialized lazy parameters; run one forward pass"):
        initialize(m, "he")
    m(x)
    initialize(m, {"*": "he", "BatchNorm1d": "constant(value=1)"} if "Norm" in type(m[0]).__name__ else "he",
               generator=gen(0))
