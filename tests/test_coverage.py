"""Every class in torch.nn with parameters is handled by initialize or listed in
``initlab.schemes.layers.UNSUPPORTED``; a model of all handled layer types is covered completely
and initializes reproducibly.

A new torch release that adds a module class makes ``test_every_class_is_buildable`` fail until
ARGS below says how to construct it (when it needs arguments), and
``test_every_class_with_parameters_is_handled_or_unsupported`` fail until it is handled or listed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import pytest
import torch
from torch import nn

from initlab.schemes import UNSUPPORTED, initialize, initialize_with_report


def torch_nn_classes() -> dict[str, type]:
    """Public nn.Module subclasses of torch.nn.modules, its namespace and its submodules."""
    found = {n: c for n, c in vars(nn.modules).items() if inspect.isclass(c) and issubclass(c, nn.Module)}
    for info in pkgutil.iter_modules(nn.modules.__path__):
        mod = importlib.import_module(f"torch.nn.modules.{info.name}")
        for n, c in vars(mod).items():
            if (inspect.isclass(c) and issubclass(c, nn.Module) and c.__module__ == mod.__name__
                    and not n.startswith("_")):
                found.setdefault(n, c)
    return dict(sorted(found.items()))


def A(*args, **kwargs):
    """Constructor arguments for the class named by the key of ARGS."""
    return args, kwargs


# Small constructor arguments of every class that needs some, with parameters switched on where
# they are optional (InstanceNorm affine, ...); a callable builds the module itself (composites).
# A class missing here is built with no arguments.
ARGS = {
    **{f"Adaptive{k}Pool{d}d": A(2) for k in ("Avg", "Max") for d in (1, 2, 3)},
    "AdaptiveLogSoftmaxWithLoss": A(8, 10, [4]),
    **{f"{k}{d}d": A(2) for k in ("AvgPool", "MaxPool", "MaxUnpool") for d in (1, 2, 3)},
    **{f"LPPool{d}d": A(2, 2) for d in (1, 2, 3)},
    "FractionalMaxPool2d": A(2, output_size=2),
    "FractionalMaxPool3d": A(2, output_size=2),
    **{f"{k}Pad{d}d": A(1) for k in ("Circular", "Reflection", "Replication", "Zero") for d in (1, 2, 3)},
    **{f"ConstantPad{d}d": A(1, 0.0) for d in (1, 2, 3)},
    "ChannelShuffle": A(2),
    "PixelShuffle": A(2),
    "PixelUnshuffle": A(2),
    "Fold": A(4, 2),
    "Unfold": A(2),
    "Unflatten": A(1, (2, 2)),
    "Threshold": A(0.1, 0.0),
    "CrossMapLRN2d": A(3),
    "LocalResponseNorm": A(2),
    "Linear": A(3, 4),
    "NonDynamicallyQuantizableLinear": A(3, 4),
    "Bilinear": A(3, 4, 5),
    "LinearCrossEntropyLoss": A(8, 10, bias=True),
    "Conv1d": A(2, 4, 3),
    "Conv2d": A(2, 4, 3, groups=2),
    "Conv3d": A(2, 4, 3),
    "ConvTranspose1d": A(2, 4, 3, stride=2),
    "ConvTranspose2d": A(2, 4, 3, groups=2),
    "ConvTranspose3d": A(2, 4, 3),
    "Embedding": A(10, 4, padding_idx=0),
    "EmbeddingBag": A(10, 4),
    "RNN": A(3, 4, num_layers=2, bidirectional=True),
    "LSTM": A(3, 4, num_layers=2, bidirectional=True, proj_size=2),
    "GRU": A(3, 4),
    "RNNBase": A("LSTM", 3, 4),
    "RNNCell": A(3, 4),
    "LSTMCell": A(3, 4),
    "GRUCell": A(3, 4),
    "RNNCellBase": A(3, 4, True, 4),
    "MultiheadAttention": A(8, 2, kdim=5, vdim=6, add_bias_kv=True),
    "TransformerEncoderLayer": A(8, 2, 16),
    "TransformerDecoderLayer": A(8, 2, 16),
    "TransformerEncoder": lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2,
                                                        enable_nested_tensor=False),
    "TransformerDecoder": lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16), 2),
    "Transformer": A(8, 2, 1, 1, 16),
    **{f"BatchNorm{d}d": A(4) for d in (1, 2, 3)},
    "SyncBatchNorm": A(4),
    **{f"InstanceNorm{d}d": A(4, affine=True) for d in (1, 2, 3)},
    "LayerNorm": A(4),
    "GroupNorm": A(2, 4),
    "RMSNorm": A(4),
    "PReLU": A(3),
    "ParameterList": lambda: nn.ParameterList([nn.Parameter(torch.ones(3))]),
    "ParameterDict": lambda: nn.ParameterDict({"a": nn.Parameter(torch.ones(3))}),
    "LazyLinear": A(4),
    **{f"Lazy{k}{d}d": A(4, 3) for k in ("Conv", "ConvTranspose") for d in (1, 2, 3)},
    **{f"LazyInstanceNorm{d}d": A(affine=True) for d in (1, 2, 3)},
}
CLASSES = torch_nn_classes()


def build(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations of torch's own
        spec = ARGS.get(name, A())
        if callable(spec):
            return spec()
        args, kwargs = spec
        return CLASSES[name](*args, **kwargs)


def with_params() -> list[str]:
    return [n for n in CLASSES if list(build(n).parameters())]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def anchored(module: nn.Module) -> nn.Module:
    # "he" must apply to something even when the class alone has only norm-like parameters
    return nn.ModuleDict({"anchor": nn.Linear(2, 2), "m": module})


@pytest.mark.parametrize("name", list(CLASSES))
def test_every_class_is_buildable(name):
    try:
        build(name)
    except Exception as err:  # noqa: BLE001 - any failure means the table needs an entry
        pytest.fail(f"cannot build torch.nn.{name} ({err}); add small constructor arguments to ARGS")


@pytest.mark.parametrize("name", with_params())
def test_every_class_with_parameters_is_handled_or_unsupported(name):
    module = build(name)
    if any(torch.nn.parameter.is_lazy(p) for p in module.parameters()):
        with pytest.raises(ValueError, match="run one forward pass"):
            initialize(anchored(module), "he")
        return
    if name in UNSUPPORTED:
        with pytest.warns(UserWarning, match="no rule covers"):
            _, report = initialize_with_report(anchored(module), "he", generator=gen())
        assert (report.rule.isna() & report.note.str.contains(UNSUPPORTED[name], regex=False)).any()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = initialize_with_report(anchored(module), "he", generator=gen())
    assert report.rule.notna().all(), report[report.rule.isna()].parameter.tolist()


def test_unsupported_table_names_real_uncovered_classes():
    for name, reason in UNSUPPORTED.items():
        assert name in CLASSES and reason
        assert list(build(name).parameters())


def all_handled_model() -> nn.Module:
    parts = {}
    for name in with_params():
        m = build(name)
        if name not in UNSUPPORTED and not any(torch.nn.parameter.is_lazy(p) for p in m.parameters()):
            parts[name] = m
    parts["weight_norm"] = nn.utils.parametrizations.weight_norm(nn.Linear(3, 4))
    parts["spectral_norm"] = nn.utils.parametrizations.spectral_norm(nn.Conv1d(2, 3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        parts["old_weight_norm"] = nn.utils.weight_norm(nn.Linear(3, 4))
    parts["old_spectral_norm"] = nn.utils.spectral_norm(nn.Linear(3, 4))
    return nn.ModuleDict(parts)


def test_all_handled_types_covered_and_reproducible():
    torch.manual_seed(0)
    a = all_handled_model()
    torch.manual_seed(1)
    b = all_handled_model()  # different construction-time values
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = initialize_with_report(a, "he", generator=gen(5))
        initialize(b, "he", generator=gen(5))
    assert report.rule.notna().all(), report[report.rule.isna()].parameter.tolist()
    assert len(report) > 150 and report.module_type.nunique() > 30
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), n
