"""``initlab.coverage``: a model's own init path on fresh storage finds planted faults (a parameter it never
writes, one a later call overwrites, tied copies that disagree) and none on correct models, zoo, timm and
transformers ones included. (tests/test_coverage.py is about which layer types ``initialize`` covers.)"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import initlab
from initlab.analysis.coverage import Coverage, coverage
from initlab.cli import app
from initlab.models import make_model
from initlab.models.external import library_lm


class Untouched(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))  # set in __init__ only: lost on the meta path
        self.init_weights()

    def init_weights(self):
        nn.init.zeros_(self.fc.bias)


class ParentReset(nn.Module):
    """Its reset_parameters initializes a child's weight, which the child's own reset then overwrites."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def reset_parameters(self):
        nn.init.zeros_(self.fc.weight)


class HasParentReset(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ParentReset()


class DoubleInit(nn.Module):
    """A model-level init that initializes one layer in two separate calls."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.init_weights()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def init_weights(self):
        self.apply(self._init_weights)
        self._init_weights(self.a)  # a second time: overwrites a's first draw


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        self.dec.weight = self.enc.weight


class RebindsTie(Tied):
    def init_weights(self):  # replaces the shared parameter by a copy, then draws the copy
        self.dec.weight = nn.Parameter(torch.empty(10, 4))
        nn.init.normal_(self.dec.weight)


def by_name(cov: Coverage) -> dict:
    return {t.tensor: t for t in cov.tensors}


def test_untouched_parameter_is_never_written():
    cov = coverage(Untouched)
    rows = by_name(cov)
    assert rows["scale"].status == "never written" and rows["scale"].unwritten == 4 and rows["scale"].nan == 4
    assert rows["fc.weight"].status == "ok" and rows["fc.bias"].overridden == 4  # init_weights over the layer default
    assert cov.count("never written") == 1 and "1 never written" in cov.summary()


def test_parent_reset_overwritten_by_child_reset_is_written_twice():
    rows = by_name(coverage(HasParentReset))
    assert rows["block.fc.weight"].status == "written twice" and rows["block.fc.weight"].twice == 16
    assert rows["block.fc.bias"].status == "ok"


def test_second_init_call_of_one_layer_is_written_twice():
    rows = by_name(coverage(DoubleInit))
    assert rows["a.weight"].status == "written twice" and rows["a.bias"].status == "written twice"
    assert rows["b.weight"].status == "ok" and rows["b.weight"].overridden == 16


def test_tied_copies_that_disagree():
    # the tie is kept (one tensor, both owners write it), but the last owner's reset wins on the meta path:
    # the head's Linear default, where the eager model kept the embedding's N(0, 1)
    rows = by_name(coverage(Tied))
    assert rows["enc.weight"].status == "differs from eager" and rows["enc.weight"].tie_ok
    assert rows["enc.weight"].writers == ("dec",) and rows["enc.weight"].eager_std == pytest.approx(1, rel=0.3)
    rows = by_name(coverage(Tied, materialize_with="to_empty"))  # torch's to_empty unties it
    assert rows["enc.weight"].status == rows["dec.weight"].status == "tied, disagreeing"
    rows = by_name(coverage(RebindsTie))
    assert rows["dec.weight"].status == "tied, disagreeing" and rows["dec.weight"].tied_with == ("enc.weight",)


def test_declared_ties_are_checked():
    net = lambda: nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
    rows = by_name(coverage(net, ties=[("a.weight", "b.weight")]))
    assert rows["a.weight"].status == "tied, disagreeing"


def test_a_model_instance_is_not_changed():
    net = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    before = [p.detach().clone() for p in net.parameters()]
    cov = coverage(net)
    assert cov.faults == () and cov.path == ("reset_parameters ×2",)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_frame_and_errors():
    frame = coverage(Untouched).to_frame()
    assert frame.columns[0] == "tensor" and set(frame.status) == {"ok", "never written"}
    with pytest.raises(ValueError, match="no method 'nope'"):
        coverage(Untouched, init="nope")
    with pytest.raises(TypeError):
        coverage(3)
    assert initlab.coverage is coverage


@pytest.mark.parametrize("build", [
    lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)),
    lambda: make_model("resnet(blocks=2,norm=batch)", (1, 8, 8), 10),
    lambda: make_model("mlp(depth=3,width=16)", (1, 8, 8), 10),
], ids=["linear-mlp", "zoo-resnet", "zoo-mlp"])
def test_correct_models_have_no_faults(build):
    cov = coverage(build)
    assert cov.faults == (), cov.to_frame()
    assert all(t.nan == 0 for t in cov.tensors)


def test_zoo_transformer_positions_buffer_is_lost_on_the_meta_path():
    # the zoo Transformer computes its ``positions`` buffer in __init__: nothing recomputes it after to_empty
    cov = coverage(lambda: make_model("transformer(depth=1,width=16,heads=2)", (1, 8, 8), 10))
    assert [t.tensor for t in cov.faults] == ["positions"]


def test_timm_resnet18_has_no_faults():
    timm = pytest.importorskip("timm")
    cov = coverage(lambda: timm.create_model("resnet18", num_classes=10))
    assert cov.faults == () and cov.path[-1] == "init_weights()"
    assert sum(t.overridden > 0 for t in cov.tensors) > 20  # its kaiming_normal_ over every Conv2d default


def test_gpt2_tiny_has_no_faults():
    pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
        cov = coverage(lambda: library_lm("gpt2", **sizes))
        rows = by_name(cov)
        assert cov.faults == ()
        # GPT-2's scaled c_proj: the block's init overrides the Conv1D's own
        assert rows["transformer.h.0.attn.c_proj.weight"].writers == ("transformer.h.0.attn",)
        assert rows["transformer.wte.weight"].tied_with == ("lm_head.weight",)
        built = library_lm("gpt2", **sizes)  # an instance: the init flags of its first init are ignored
        assert coverage(built).faults == ()


def test_llama_tiny_untied_has_no_faults_and_its_rotary_buffers_are_written():
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       num_key_value_heads=2, vocab_size=100, max_position_embeddings=16,
                                       tie_word_embeddings=False)
        cov = coverage(lambda: transformers.LlamaForCausalLM(cfg))
    assert cov.faults == ()  # the class declares lm_head tied, this config does not tie it
    assert by_name(cov)["model.rotary_emb.inv_freq"].writers == ("model.rotary_emb",)


def test_nn_transformer_attention_is_never_written_on_the_meta_path():
    # MultiheadAttention has only the private _reset_parameters, which its __init__ calls; nn.Transformer's
    # xavier_uniform_ over every matrix is in its __init__ too
    cov = coverage(lambda: nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                          dim_feedforward=32, batch_first=True))
    never = {t.tensor.rsplit(".", 1)[-1] for t in cov.faults if t.status == "never written"}
    assert never == {"in_proj_weight", "in_proj_bias"} and cov.count("never written") == 6
    assert cov.count("differs from eager") > 0


class InitInInit(nn.Module):
    """Initializes in __init__ only (torchvision style): the meta path keeps the layer defaults."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3)
        self.bn = nn.BatchNorm2d(16)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.zeros_(self.bn.weight)


def test_init_in_init_differs_from_eager():
    cov = coverage(InitInInit)
    rows = by_name(cov)
    assert rows["conv.weight"].status == rows["bn.weight"].status == "differs from eager"
    assert rows["conv.weight"].eager_std == pytest.approx((2 / 144) ** 0.5, rel=0.1)
    assert rows["conv.bias"].status == "ok"
    assert coverage(InitInInit, eager=False).faults == ()
    assert coverage(InitInInit()).count("differs from eager") == 2  # a built model is its own reference


def test_torchvision_resnet18_init_is_lost_on_the_meta_path():
    torchvision = pytest.importorskip("torchvision")
    cov = coverage(lambda: torchvision.models.resnet18(num_classes=10))
    assert cov.count("differs from eager") == 20  # its kaiming_normal_(fan_out) of every conv lives in __init__
    assert {t.tensor.rsplit(".", 1)[-1] for t in cov.faults} == {"weight"}


class Wrapper(nn.Module):
    """A model inside an adapter without an init of its own: the inner model's init_weights runs."""

    def __init__(self):
        super().__init__()
        self.inner = DoubleInit()
        self.extra = nn.Linear(2, 2)


def test_wrapped_model_runs_the_inner_init():
    cov = coverage(Wrapper)
    assert cov.path == ("reset_parameters ×3", "inner.init_weights()")
    assert by_name(cov)["inner.a.weight"].status == "written twice"


def test_cli_coverage():
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "--coverage", "resnet(blocks=1)", "--input-shape", "3,8,8"])
    assert ok.exit_code == 0, ok.output
    assert "no faults" in ok.output
    bad = runner.invoke(app, ["audit", "--coverage", "transformer(depth=1,width=16,heads=2)", "--input-shape", "1,8,8"])
    text = " ".join(bad.output.split())
    assert bad.exit_code == 1 and "1 never written" in text
    err = runner.invoke(app, ["audit", "--coverage", "nope(x=1)"])
    assert err.exit_code == 2 and "unknown model" in err.output
