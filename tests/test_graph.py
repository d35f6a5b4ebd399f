import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab import mlp
from initlab.graph import ModelGraph, is_elementwise, read_graph


def _acts(graph: ModelGraph) -> dict:
    return {layer.name: layer.activation_name for layer in graph.layers}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_initlab_mlp(activation):
    g = read_graph(mlp(8, [16, 16], 3, activation), torch.randn(4, 8))
    assert g.method == "fx" and g.residual_streams == {} and g.notes == ()
    assert [x.name for x in g.layers] == ["fc1", "fc2", "fc3"]
    assert _acts(g) == {"fc1": activation, "fc2": activation, "fc3": None}
    assert [x.is_output for x in g.layers] == [False, False, True]
    assert g["fc3"].feeds == "none" and g["fc1"].feeds == "activation"
    x = torch.linspace(-3, 3, 7)
    assert torch.equal(g["fc1"].activation(x), getattr(torch, activation)(x))


class FunctionalMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.out = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = lambda t: t * torch.sigmoid(1.5 * t)  # a user activation, traced through

    def forward(self, x):
        h = F.gelu(self.fc1(x))
        h = self.act(F.dropout(self.fc2(h), 0.1, self.training))
        h = torch.sin(self.fc3(h))
        return self.out(h)


def test_functional_and_lambda_activations():
    g = read_graph(FunctionalMLP(), torch.randn(3, 5))
    assert _acts(g) == {"fc1": "gelu", "fc2": "<lambda>", "fc3": "torch.sin", "out": None}
    assert g["fc1"].activation is F.gelu and g["fc3"].activation is torch.sin
    assert g["fc2"].through == ("dropout",)
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(g["fc2"].activation(x), x * torch.sigmoid(1.5 * x))  # the composite, usable on 1-D input
    assert is_elementwise(g["fc2"].activation, torch.empty(64))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Dropout(0.5),
        )
        self.head = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def test_cnn_batchnorm_relu_pool():
    g = read_graph(CNN(), torch.randn(2, 1, 8, 8))
    assert [x.name for x in g.layers] == ["features.0", "features.4", "head"]
    assert _acts(g) == {"features.0": "relu", "features.4": "relu", "head": None}
    assert g["features.0"].through == ("BatchNorm2d",) and g["features.0"].kind == "Conv2d"
    assert g["head"].is_output and not g["features.4"].is_output


def test_model_is_left_as_it_was():
    model = CNN().train()
    model.features[1].eval()  # a mixed state must survive too
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = torch.randn(2, 1, 8, 8)
    attrs, rng = set(vars(model)), torch.get_rng_state()
    read_graph(model, x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BatchNorm statistics too
    assert [m.training for m in model.modules()] == modes
    assert set(vars(model)) == attrs and torch.equal(torch.get_rng_state(), rng)
    assert not any(m._forward_hooks for m in model.modules())


class ResidualMLP(nn.Module):
    def __init__(self, width=8, blocks=3):
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(fc1=nn.Linear(width, width), fc2=nn.Linear(width, width)))
                                    for _ in range(blocks))
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = x + b["fc2"](F.relu(b["fc1"](x)))
        return self.head(x)


def test_residual_mlp():
    g = read_graph(ResidualMLP(), torch.randn(3, 4))
    assert g.residual_streams == {0: 3}
    for i in range(3):
        fc1, fc2 = g[f"blocks.{i}.fc1"], g[f"blocks.{i}.fc2"]
        assert fc1.activation_name == "relu" and fc2.activation is None
        assert fc1.residual_stream == fc2.residual_stream == 0
        assert fc2.branch_final and not fc1.branch_final
    assert g["inp"].residual_stream is None and g["head"].residual_stream is None and g["head"].is_output


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(4, 2), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(torch.cat([self.a(x), self.b(x)], dim=-1)))


def test_concatenation_of_two_branches():
    g = read_graph(Concat(), torch.randn(5, 4))
    assert (g["a"].concat_group, g["a"].concat_share) == (0, 0.75)
    assert (g["b"].concat_group, g["b"].concat_share) == (0, 0.25)
    assert g["a"].activation_name == g["b"].activation_name == "relu" and g["a"].through == ("cat",)
    assert g["head"].concat_group is None and g.residual_streams == {}


class Transformer(nn.Module):
    def __init__(self, activation):
        super().__init__()
        self.embed = nn.Linear(5, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, activation=activation, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x, mask=None):
        return self.head(self.encoder(self.embed(x), src_key_padding_mask=mask).mean(dim=1))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_classifier(activation):
    model = Transformer(activation).eval()
    x, mask = torch.randn(2, 7, 5), torch.zeros(2, 7, dtype=torch.bool)
    g = read_graph(model, {"x": x, "mask": mask} if activation == "gelu" else x)
    assert g.method == "fx", g.notes
    assert g.residual_streams == {0: 4}  # one stream, 2 layers x (attention + feed-forward)
    for i in range(2):
        p = f"encoder.layers.{i}"
        assert g[f"{p}.linear1"].activation_name == activation and g[f"{p}.linear1"].through == ()
        assert g[f"{p}.linear2"].branch_final and g[f"{p}.self_attn.out_proj"].branch_final
        assert not g[f"{p}.linear1"].branch_final and not g[f"{p}.self_attn"].branch_final
        assert g[f"{p}.self_attn"].feeds == "non-elementwise"
        assert {g[f"{p}.{n}"].residual_stream for n in ("self_attn", "self_attn.out_proj", "linear1", "linear2")} == {0}
    assert g["head"].is_output and g["embed"].activation is None


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.fc(out[:, -1])


def test_lstm_classifier():
    g = read_graph(LSTMClassifier(), torch.randn(2, 5, 3))
    assert g.method == "fx" and [x.name for x in g.layers] == ["lstm", "fc"]
    assert g["lstm"].feeds == "built-in" and g["lstm"].activation is torch.tanh and g["lstm"].kind == "LSTM"
    assert g["fc"].is_output and g["fc"].activation is None


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act1, self.norm = nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8)
        self.fc2, self.act2, self.fc3 = nn.Linear(8, 8), Swish(), nn.Linear(8, 2)

    def forward(self, x):
        h = self.act1(self.fc1(x))
        if h.sum() > 0:  # data-dependent: fx cannot follow it
            h = self.act2(self.norm(self.fc2(h)))
        else:
            h = self.act2(self.norm(self.fc2(-h)))
        return self.fc3(h)


def test_data_dependent_control_flow_falls_back_to_hooks():
    model = Branchy()
    g = read_graph(model, torch.randn(6, 4))
    assert g.method == "hooks" and "data-dependent" in g.notes[0] and g.residual_streams == {}
    assert _acts(g) == {"fc1": "relu", "fc2": "Swish", "fc3": None}
    assert g["fc2"].activation is model.act2 and g["fc2"].through == ("LayerNorm",)  # Swish passed the numeric test
    assert g["fc3"].is_output and g["fc2"].residual_stream is None
    assert not any(m._forward_hooks for m in model.modules())


class SoftmaxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.softmax(self.fc1(x), dim=-1))


def test_softmax_is_not_elementwise():
    g = read_graph(SoftmaxHead(), torch.randn(1, 4))  # one row: softmax is still caught (redraw test)
    assert g["fc1"].feeds == "non-elementwise" and g["fc1"].activation is None
    assert g["fc1"].activation_name == "torch.softmax"
    assert not is_elementwise(lambda t: torch.softmax(t, -1), torch.empty(1, 6))
    assert not is_elementwise(lambda t: t * torch.arange(t.numel()).reshape(t.shape), torch.empty(3, 4))
    assert is_elementwise(torch.sin, torch.empty(3, 4))


def test_other_weight_types_and_tuple_outputs():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.conv = nn.Embedding(10, 8), nn.Conv1d(8, 8, 3, padding=1)
            self.up, self.bil = nn.ConvTranspose1d(8, 8, 2, stride=2), nn.Bilinear(8, 8, 2)

        def forward(self, tokens):
            h = nn.functional.silu(self.conv(self.emb(tokens).transpose(1, 2)))
            h = self.up(h).mean(-1)
            return self.bil(h, h), h

    g = read_graph(Mixed(), (torch.randint(0, 10, (2, 5)),))
    assert [x.kind for x in g.layers] == ["Embedding", "Conv1d", "ConvTranspose1d", "Bilinear"]
    assert g["emb"].activation is None and g["emb"].feeds == "none"
    assert g["conv"].activation_name == "silu"
    assert g["up"].is_output and g["up"].through == ("mean",) and g["bil"].is_output


def test_errors_leave_no_hooks():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2))  # shape mismatch
    with pytest.raises(RuntimeError):
        read_graph(model, torch.randn(2, 4))
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="example does not fit"):
        read_graph(mlp(4, [3], 2), {"y": torch.randn(2, 4)})
