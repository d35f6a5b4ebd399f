"""Meta-device models: ``initialize(model_on_meta, scheme, generator=g)`` materializes and initializes in one
call, bit-identical to initializing the same model built eagerly with the same seed; ties survive."""
from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

from initlab import get_scheme, initialize, initialize_with_report, list_schemes, make_model
from initlab.schemes.materialize import is_meta, materialize, require_materialized

TENSOR_SCHEMES = [n for n in list_schemes() if not get_scheme(n).whole_model]


class Mixed(nn.Module):
    """Every kind of layer initialize handles, and a tied embedding/head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 12, bias=False)
        self.head.weight = self.emb.weight


def build_pair(build):
    eager = build()
    with torch.device("meta"):
        meta = build()
    return eager, meta


def same_state(a: nn.Module, b: nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.parametrize("scheme", TENSOR_SCHEMES)
@pytest.mark.parametrize("build", [Mixed, lambda: make_model("resnet(blocks=2,norm=batch)", (1, 8, 8), 10)],
                         ids=["mixed", "zoo-resnet"])
def test_meta_is_bit_identical_to_eager(scheme, build):
    eager, meta = build_pair(build)
    assert is_meta(meta) and not is_meta(eager)
    spec = "constant(value=0.5)" if scheme == "constant" else scheme
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            initialize(eager, spec, generator=torch.Generator().manual_seed(7))
        except ValueError as e:  # a scheme that does not apply to this model: the meta model says the same
            with pytest.raises(ValueError, match=re.escape(str(e))):
                initialize(meta, spec, generator=torch.Generator().manual_seed(7))
            return
        out = initialize(meta, spec, generator=torch.Generator().manual_seed(7))
    assert out is meta and not is_meta(meta)
    assert same_state(eager, meta) == []
    if isinstance(meta, Mixed):
        assert meta.head.weight is meta.emb.weight


@pytest.mark.parametrize("spec", ["mlp(depth=3,width=16,activation=tanh)", "resnet(blocks=2,norm=batch)"])
def test_meta_auto_with_example_is_bit_identical(spec):
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    eager, meta = build_pair(lambda: make_model(spec, (1, 8, 8), 10))
    if spec.startswith("mlp"):
        x = x.reshape(32, -1)
    initialize(eager, "auto", example=x, generator=torch.Generator().manual_seed(5))
    initialize(meta, "auto", example=x, generator=torch.Generator().manual_seed(5))
    assert same_state(eager, meta) == []


def test_report_and_explicit_device():
    eager, meta = build_pair(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    _, report = initialize_with_report(meta, "he", generator=torch.Generator().manual_seed(0), device="cpu")
    initialize(eager, "he", generator=torch.Generator().manual_seed(0))
    assert same_state(eager, meta) == [] and report["std_after"].notna().all()


def test_uncovered_meta_parameter_stays_nan_and_is_named():
    class Extra(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.gain = nn.Parameter(torch.ones(3))

    with torch.device("meta"):
        net = Extra()
    with pytest.warns(UserWarning, match="gain"):
        initialize(net, "he", generator=torch.Generator().manual_seed(0))
    assert torch.isnan(net.gain).all() and not torch.isnan(net.fc.weight).any()


def test_buffer_computed_in_init_is_named():
    with torch.device("meta"):
        net = make_model("transformer(depth=1,width=16,heads=2)", (1, 8, 8), 10)
    with pytest.warns(UserWarning, match="positions"):
        initialize(net, "he", generator=torch.Generator().manual_seed(0))


def test_materialize_keeps_ties_and_attributes_to_empty_does_not():
    def build():
        net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        net[1].weight = net[0].weight
        net[0].weight.infshape = "kept"
        return net

    with torch.device("meta"):
        a, b = build(), build()
    materialize(a)
    assert a[1].weight is a[0].weight and a[0].weight.infshape == "kept" and torch.isnan(a[0].weight).all()
    b.to_empty(device="cpu")
    assert b[1].weight is not b[0].weight  # why initialize does not use to_empty


def test_errors():
    with pytest.raises(ValueError, match="already on cpu"):
        initialize(nn.Linear(3, 3), "he", device="meta")
    with torch.device("meta"):
        net = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="real device"):
        initialize(net, "he", device="meta")
    with pytest.raises(ValueError, match="audit runs the model forward.*meta device.*initialize"):
        require_materialized(net, "audit")
    require_materialized(nn.Linear(2, 2), "audit")  # a materialized model passes


def test_audit_and_probe_refuse_a_meta_model_in_one_line():
    import initlab

    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    for call in (lambda: initlab.audit(model, x), lambda: initlab.probe(model, x)):
        with pytest.raises(ValueError, match=r"meta device .*initialize\(model, scheme, device=\.\.\.\)"):
            call()
