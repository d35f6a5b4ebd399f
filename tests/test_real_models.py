"""initlab on the networks people use: timm, torchvision and Hugging Face transformers models built from
small configs (nothing downloaded): every parameter covered under strict=True, tied tensors initialized
once and in the right role, forward and backward finite, the recognized layer types read correctly."""
import math
import warnings

import pytest
import torch
from torch import nn

import initlab
from initlab.models.external import REAL_SUITE, suite_example

pytest.importorskip("timm", reason="the dev extra installs timm")  # real dependency of this file: never skipped in CI
pytest.importorskip("transformers", reason="the dev extra installs transformers")


def build(name: str):
    maker, kind = REAL_SUITE[name]
    torch.manual_seed(0)  # the library's own init draws from the global RNG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' config chatter
        model = maker(32)
    return model.eval(), suite_example(kind, batch=2, generator=torch.Generator().manual_seed(1), size=32)


def call(model, example):
    out = model(**example) if isinstance(example, dict) else model(example)
    return out if isinstance(out, torch.Tensor) else out[0] if isinstance(out, tuple) else out.logits


def test_the_suite_spans_the_three_libraries_and_fifteen_architectures():
    assert len(REAL_SUITE) >= 15
    assert {n.partition(":")[0] for n in REAL_SUITE} == {"timm", "torchvision", "hf"}


@pytest.mark.parametrize("name", list(REAL_SUITE))
def test_every_parameter_is_covered_once_under_strict_and_the_model_stays_finite(name):
    model, example = build(name)
    tensors = len(list(model.parameters()))  # tied tensors once
    for scheme in ("he", "auto"):
        _, report = initlab.initialize_with_report(model, scheme, generator=torch.Generator().manual_seed(0),
                                                   strict=True, example=example)
        names = report.parameter.str.replace(r"\[.*\]$", "", regex=True)
        assert names.nunique() == tensors, (scheme, tensors, names.nunique())
        assert report.rule.notna().all(), report[report.rule.isna()].parameter.tolist()
    out = call(model.train(), example)
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_gpt2_conv1d_is_a_transposed_linear_and_c_attn_three_blocks():
    model, _ = build("hf:gpt2")
    e = model.config.n_embd
    _, report = initlab.initialize_with_report(model, "xavier_uniform", generator=torch.Generator().manual_seed(0),
                                               strict=True)
    rows = report.set_index("parameter")
    for part in "qkv":
        assert rows.loc[f"transformer.h.0.attn.c_attn.weight[{part}]", "fan_in"] == e
        assert rows.loc[f"transformer.h.0.attn.c_attn.weight[{part}]", "fan_out"] == e
    assert rows.loc["transformer.h.0.mlp.c_fc.weight", ["fan_in", "fan_out"]].tolist() == [e, 4 * e]
    # a block is a column slice of the (in, out) weight: each has xavier's bound for an e -> e map
    w = model.transformer.h[0].attn.c_attn.weight.detach()
    bound = math.sqrt(6 / (2 * e))
    for i in range(3):
        block = w[:, i * e:(i + 1) * e]
        assert float(block.abs().max()) <= bound and float(block.abs().max()) > 0.9 * bound


def test_gpt2_tied_unembedding_is_initialized_once_as_the_output_projection():
    """lm_head.weight is transformer.wte.weight: as an embedding (fan_in 1) He would draw std √2 and the
    logits would start at std ≈ √(2·width); as the output projection (fan_in = width) they start O(1)."""
    model, example = build("hf:gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    _, report = initlab.initialize_with_report(model, "he", generator=torch.Generator().manual_seed(0), strict=True)
    tied = report[report.parameter == "lm_head.weight"]
    assert len(tied) == 1 and "transformer.wte.weight" not in set(report.parameter)
    assert "tied with transformer.wte.weight" in tied.note.iloc[0]
    assert tied.fan_in.iloc[0] == model.config.n_embd
    with torch.no_grad():
        logits = call(model, example)
    assert 0.3 < float(logits.std()) < 3


def test_audit_flags_huge_initial_logits_of_a_tied_embedding_drawn_as_an_embedding():
    model, example = build("hf:gpt2")
    report = initlab.audit(model, example, ["he", "normal(std=1.0)"])
    s = report.summary().set_index("scheme")
    assert s.loc["he", "logit_std"] < 3 and "huge logits" not in s.loc["he", "flags"]
    assert s.loc["normal(std=1.0)", "logit_std"] > 3 and "huge logits" in s.loc["normal(std=1.0)", "flags"]
    assert "initial loss" in s.loc["normal(std=1.0)", "flags"]
    with pytest.raises(AssertionError, match="huge logits"):
        report.assert_healthy("normal(std=1.0)")


def test_audit_sees_every_weight_layer_of_gpt2_and_never_passes_a_missing_ratio():
    model, example = build("hf:gpt2")
    report = initlab.audit(model, example, ["he"])
    layers = report.candidates["he"].layers
    conv1d = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert set(conv1d) <= set(layers.name)  # 4 per block, all seen
    a = report.candidates["he"]
    assert math.isfinite(a.forward_ratio) and math.isfinite(a.grad_ratio)
    assert a.seconds > 0


def test_rms_norms_of_t5_and_llama_are_recognized_as_norms():
    for name, cls in (("hf:t5", "T5LayerNorm"), ("hf:llama", "LlamaRMSNorm")):
        model, _ = build(name)
        norms = [m for m in model.modules() if type(m).__name__ == cls]
        for m in norms:
            nn.init.normal_(m.weight)
        _, report = initlab.initialize_with_report(model, "he", generator=torch.Generator().manual_seed(0), strict=True)
        assert all(bool((m.weight == 1).all()) for m in norms)
        rows = report[report.module_type == cls]
        assert len(rows) == len(norms) and rows.note.str.contains("norm-like").all()


def test_vit_tokens_and_position_embeddings_get_their_role_defaults_and_layer_scales_are_kept():
    model, _ = build("timm:deit_tiny")
    _, report = initlab.initialize_with_report(model, "he", generator=torch.Generator().manual_seed(0), strict=True)
    rows = report.set_index("parameter")
    for name in ("cls_token", "dist_token", "pos_embed"):
        assert rows.loc[name, "scheme"] == "trunc_normal(std=0.02,a=-0.04,b=0.04)"
        t = getattr(model, name).detach()
        assert float(t.abs().max()) <= 0.04 + 1e-6  # truncated at ±2σ
    assert float(model.pos_embed.detach().std()) == pytest.approx(0.02 * 0.88, rel=0.1)  # a ±2σ cut keeps 88% of the std
    convnext, _ = build("timm:convnext_atto")
    _, report = initlab.initialize_with_report(convnext, "he", generator=torch.Generator().manual_seed(0), strict=True)
    gammas = report[report.parameter.str.endswith(".gamma")]
    assert len(gammas) > 0 and gammas.note.str.contains("layer scale").all()
    assert float(convnext.stages[0].blocks[0].gamma.detach().max()) == pytest.approx(1e-6)


def test_library_model_specs_build_adapted_models_for_initlab_data():
    from initlab.models import make_model

    x = torch.randn(3, 64)  # digits: 1×8×8
    for spec in ("timm:resnet18", "torchvision:resnet18", "timm:vit_tiny_patch16_224(patch_size=4)", "hf:gpt2"):
        model = make_model(spec, (1, 8, 8), 10)
        out = model(x.reshape(3, 1, 8, 8))
        assert out.shape == (3, 10) and torch.isfinite(out).all(), spec
    with pytest.raises(ValueError, match="timm has no model 'resnet_nope'"):
        make_model("timm:resnet_nope", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="unknown Hugging Face family 'gpt9'; choose from: gpt2"):
        make_model("hf:gpt9", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="hf:gpt2 could not be built|hf:gpt2:"):
        make_model("hf:gpt2(n_embd=10,n_head=3)", (1, 8, 8), 10)


def _same_init(ours: nn.Module, theirs: nn.Module, skip=()):
    """Per tensor: the same zeros and ones (constant tensors equal), and stds within 6 standard errors
    (the std of n Gaussian draws has relative standard error ≈ 1/√(2n)) where both are random."""
    theirs_p = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        if any(s in name for s in skip):
            continue
        a, b = p.detach().double().flatten(), theirs_p[name].detach().double().flatten()
        if b.numel() < 2 or float(b.std()) == 0:
            assert torch.equal(a, b), name
            continue
        se = float(b.std()) / math.sqrt(2 * b.numel())
        assert abs(float(a.std()) - float(b.std())) <= 6 * se + 1e-12, (name, float(a.std()), float(b.std()))
        assert abs(float(a.mean()) - float(b.mean())) <= 6 * float(b.std()) / math.sqrt(b.numel()) + 1e-12, name


@pytest.mark.parametrize("name,preset", [("hf:gpt2", "hf"), ("hf:bert", "hf"), ("hf:llama", "hf"), ("hf:t5", "hf"),
                                         ("timm:vit_tiny", "timm_vit"), ("timm:vit_tiny", "timm_vit(mode=jax_nlhb)"),
                                         ("timm:vit_tiny", "timm_vit(mode=moco)"),
                                         ("torchvision:resnet18", "torchvision_resnet"),
                                         ("torchvision:resnet18", "torchvision_resnet(zero_init_residual=true)")])
def test_family_presets_reproduce_the_library_init(name, preset):
    import copy

    theirs, _ = build(name)
    if preset.startswith("timm_vit"):
        mode = preset.partition("mode=")[2].rstrip(")") or ""
        theirs.init_weights(mode=mode)
    if "zero_init_residual" in preset:
        import torchvision

        torch.manual_seed(0)
        theirs = torchvision.models.resnet18(weights=None, num_classes=10, zero_init_residual=True)
    ours = copy.deepcopy(theirs)
    for p in ours.parameters():  # forget the library's values: every tensor must come from the preset
        nn.init.constant_(p.data, 7.0)
    initlab.initialize(ours, preset, generator=torch.Generator().manual_seed(0), strict=True)
    _same_init(ours, theirs)


@pytest.mark.parametrize("name,finals", [("hf:gpt2", ("attn.c_proj", "mlp.c_proj")),
                                         ("hf:llama", ("self_attn.o_proj", "mlp.down_proj"))])
def test_residual_streams_of_hugging_face_models_are_read(name, finals):
    """fx cannot follow these models; the hooks reader finds their residual branches by matching each
    container's output minus input with the outputs of the layers inside it: one stream, two branches per block."""
    from initlab.graph import read_graph

    model, example = build(name)
    graph = read_graph(model, example)
    layers = model.config.num_hidden_layers
    assert graph.residual_streams == {0: 2 * layers}
    got = [x.name for x in graph.layers if x.branch_final]
    assert len(got) == 2 * layers and all(g.endswith(finals) for g in got)
    assert [x.name for x in graph.layers if x.is_output][-1] == "lm_head"


class _MyLinear(nn.Module):  # a layer type initlab has never seen, torch's layout
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_out, n_in))
        self.bias = nn.Parameter(torch.ones(n_out))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class _MyTransposed(nn.Module):  # and one storing its weight (in, out)
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))

    def forward(self, x):
        return x @ self.weight


def test_unknown_layer_types_get_fans_inferred_from_one_forward_or_are_named():
    model = nn.Sequential(_MyLinear(300, 200), nn.ReLU(), _MyTransposed(200, 100))
    with pytest.raises(ValueError, match=r"no layers to initialize.*0.weight, 2.weight look like weights.*pass example="):
        initlab.initialize(model, "he", strict=True)
    x = torch.randn(8, 300)
    _, report = initlab.initialize_with_report(model, "he", example=x, strict=True,
                                               generator=torch.Generator().manual_seed(0))
    rows = report.set_index("parameter")
    assert rows.loc["0.weight", ["fan_in", "fan_out"]].tolist() == [300, 200]
    assert rows.loc["2.weight", ["fan_in", "fan_out"]].tolist() == [200, 100]
    assert rows.note.str.contains("inferred from one forward").all()
    # He uniform: bound √(6/fan_in), so std √(2/fan_in); the bias follows He's policy (zeros)
    assert float(model[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / 300), rel=0.05)
    assert float(model[2].weight.detach().std()) == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    assert bool((model[0].bias == 0).all())


def test_compare_runs_the_honest_protocol_on_a_library_model(tmp_path):
    """--model timm:NAME: a fresh library model per run (its own init under "none", seeded), trained and
    evaluated like any zoo model; the two runs of one seed differ only by their init."""
    result = initlab.compare(inits=["none", "he"], dataset="digits", epochs=1, seeds=1, model="timm:resnet10t(stem_width=8)",
                             out=tmp_path / "c", probe=False)
    runs = result.runs.set_index("init")
    assert set(runs.status) == {"done"}
    final = result.metrics[result.metrics.epoch == 1].set_index("init")
    assert final.test_acc.between(0, 1).all() and final.test_loss.notna().all()
    assert final.loc["none", "test_loss"] != final.loc["he", "test_loss"]


def test_audit_says_why_a_flag_is_out_of_reach_of_a_scalar_init():
    convnext, example = build("timm:convnext_atto")
    report = initlab.audit(convnext, example, ["he"])
    assert any("layer scale" in n and "by design" in n for n in report.notes)
    resnet, example = build("torchvision:resnet18")
    for m in resnet.modules():  # torchvision's zero_init_residual
        if type(m).__name__ == "BasicBlock":
            nn.init.zeros_(m.bn2.weight)
    notes = initlab.audit(resnet, example, ["none"]).notes
    assert any("zero_init_last" in n for n in notes)


@pytest.mark.parametrize("name,n_proj", [("hf:gpt2", 4), ("hf:llama", 4), ("hf:bert", 4), ("timm:vit_tiny", 24)])
def test_megatron_scales_the_residual_projections_by_one_over_sqrt_2L(name, n_proj):
    from initlab.schemes.presets import residual_projections

    model, _ = build(name)
    finals = residual_projections(model)
    assert len(finals) == n_proj
    layers = n_proj // 2
    initlab.initialize(model, "megatron(std=0.02)", generator=torch.Generator().manual_seed(0), strict=True)
    params = dict(model.named_parameters())
    for key in finals:
        w = params[key].detach()
        assert float(w.std()) == pytest.approx(0.02 / math.sqrt(2 * layers), rel=6 / math.sqrt(2 * w.numel()))
    other = next(p for n, p in params.items() if p.dim() == 2 and n not in finals)
    assert float(other.detach().std()) == pytest.approx(0.02, rel=6 / math.sqrt(2 * other.numel()))
