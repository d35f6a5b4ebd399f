import pytest
import torch
from torch import nn

from initlab.models import ACTIVATIONS, mlp, parse_hidden


def test_seed_network_shape():
    model = mlp(784, [128], 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 128), (128, 10)]
    assert isinstance(model.act1, nn.ReLU)
    assert model(torch.zeros(3, 784)).shape == (3, 10)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_builds_and_runs(activation):
    model = mlp(16, [8, 8], 3, activation)
    assert model(torch.randn(5, 16)).shape == (5, 3)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3


def test_last_layer_has_no_activation():
    model = mlp(4, [4], 2, "sigmoid")
    assert isinstance(list(model.children())[-1], nn.Linear)


@pytest.mark.parametrize("bad, match", [
    (dict(activation="swish"), "unknown activation 'swish'; choose from: relu"),
    (dict(hidden=[0]), "positive integer"),
    (dict(hidden=[3, -1]), "positive integer"),
])
def test_bad_arguments(bad, match):
    kwargs = dict(in_features=4, hidden=[4], out_features=2, activation="relu") | bad
    with pytest.raises(ValueError, match=match):
        mlp(**kwargs)


def test_parse_hidden():
    assert parse_hidden("256,256") == (256, 256)
    assert parse_hidden(" 64 ") == (64,)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_hidden("64,x")
    with pytest.raises(ValueError, match="positive"):
        parse_hidden("0")
