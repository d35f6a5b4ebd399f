import numpy as np
import pytest
import torch
from torch import nn

from initlab.models import ACTIVATIONS, MAX_DEPTH, MAX_WIDTH, check_widths, mlp, parse_hidden, parse_int_list


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


# --------------------------------------------------------------------------- widths and integer lists

BIG = str(1 << 63)  # one past int64


@pytest.mark.parametrize("text, expected", [
    ("64", (64,)), ("64,32", (64, 32)), (" 64 , 32 ", (64, 32)), (str(MAX_WIDTH), (MAX_WIDTH,)),
    ("1,1,1,1", (1, 1, 1, 1)),
])
def test_parse_hidden_accepts(text, expected):
    assert parse_hidden(text) == expected
    assert all(type(w) is int for w in parse_hidden(text))


@pytest.mark.parametrize("text, message", [
    ("", "no hidden widths given, got ''"),
    ("   ", "no hidden widths given"),
    ("128,,128", "got '128,,128' (empty item"),
    ("128,", "got '128,' (empty item"),
    (",128", "got ',128' (empty item"),
    (",", "empty item"),
    ("128, ,128", "empty item"),
    ("x", "comma-separated positive integers, got 'x'"),
    ("64;64", "comma-separated positive integers"),
    ("1.5", "comma-separated positive integers"),
    ("1e3", "comma-separated positive integers"),
    ("0", "positive integer"),
    ("-1", "positive integer"),
    ("64,0", "positive integer"),
    (str(MAX_WIDTH + 1), f"at most {MAX_WIDTH}"),
    ("2000000000", "would not fit in memory"),
    (BIG, "out of range"),
    ("-" + BIG + "1", "out of range"),
    ("9" * 40, "out of range"),
])
def test_parse_hidden_rejects_one_line_naming_option_and_text(text, message):
    with pytest.raises(ValueError) as info:
        parse_hidden(text)
    msg = str(info.value)
    assert message in msg and "\n" not in msg and "hidden width" in msg, msg


@pytest.mark.parametrize("widths", [
    [np.int8(3)], [np.int16(3)], [np.int32(3)], [np.int64(3)], [np.uint8(3)], [np.uint64(3)],
    np.array([3, 4]), torch.tensor([3, 4]), [torch.tensor(3)], (3, np.int64(4)), range(3, 5),
])
def test_check_widths_accepts_integer_types_and_returns_python_ints(widths):
    out = check_widths(widths)
    assert out in ((3,), (3, 4)) and all(type(w) is int for w in out)


def test_depth_is_bounded():
    assert len(check_widths([1] * MAX_DEPTH)) == MAX_DEPTH
    with pytest.raises(ValueError, match=f"at most {MAX_DEPTH} hidden layers are supported, got {MAX_DEPTH + 1}"):
        check_widths([1] * (MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="hidden layers"):
        parse_hidden(",".join(["2"] * (MAX_DEPTH + 1)))


def test_empty_widths_mean_a_linear_classifier_only_when_explicit():
    assert check_widths(()) == () and check_widths([]) == ()
    model = mlp(4, (), 3)
    assert [type(m) for m in model] == [nn.Linear]
    with pytest.raises(ValueError, match="no hidden widths given"):
        mlp(4, "", 3)


@pytest.mark.parametrize("widths, message", [
    ([True], "positive integer"), ([np.bool_(True)], "positive integer"), ([1.0], "positive integer"),
    ([np.float64(2)], "positive integer"), (["64"], "positive integer"), ([None], "positive integer"),
    ([0], "positive integer"), ([-3], "positive integer"), ([MAX_WIDTH + 1], f"at most {MAX_WIDTH}"),
    ([1 << 64], f"at most {MAX_WIDTH}"), ([np.uint64((1 << 64) - 1)], f"at most {MAX_WIDTH}"),
    ([torch.tensor(1.0)], "positive integer"), ([torch.tensor([1, 2])], "positive integer"),
    ("64,64", "parse_hidden"), ("", "parse_hidden"), (64, "sequence of positive integers"),
    (None, "sequence of positive integers"), (np.int64(64), "sequence of positive integers"),
])
def test_check_widths_rejects(widths, message):
    with pytest.raises(ValueError) as info:
        check_widths(widths)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="hidden width"):
        mlp(4, widths, 2) if not isinstance(widths, str) else check_widths(widths)


@pytest.mark.parametrize("hidden", ["16,8", (16, 8), [np.int64(16), np.int32(8)], np.array([16, 8])])
def test_mlp_accepts_text_and_numpy_widths(hidden):
    model = mlp(np.int64(4), hidden, np.int64(2))
    assert [(l.in_features, l.out_features) for l in model if isinstance(l, nn.Linear)] == [(4, 16), (16, 8), (8, 2)]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4", None, 1 << 63])
def test_mlp_rejects_bad_in_out_features(value):
    for kw in ("in_features", "out_features"):
        with pytest.raises(ValueError, match=f"{kw} must be a positive integer"):
            mlp(**{"in_features": 4, "hidden": (4,), "out_features": 2, kw: value})


@pytest.mark.parametrize("value, expected", [
    ("2,5,10", [2, 5, 10]), ((2, 5), [2, 5]), ([np.int64(2)], [2]), (np.array([1, 2]), [1, 2]), ([-1], [-1]),
])
def test_parse_int_list_accepts(value, expected):
    out = parse_int_list(value, "depths")
    assert out == expected and all(type(v) is int for v in out)


@pytest.mark.parametrize("value, message", [
    ("", "no depths given"), ("2,,3", "depths must be comma-separated"), ("2,", "empty item"),
    ("a", "depths must be comma-separated"), (BIG, "out of range"), ([1 << 63], "out of range"),
    ([1.5], "depths must be positive integers, got 1.5"), ([True], "got True"), (["2"], "got '2'"),
    (5, "or a sequence of integers, got 5"), (None, "got None"), (b"2,3", "got b'2,3'"),
])
def test_parse_int_list_rejects_naming_the_option(value, message):
    with pytest.raises(ValueError) as info:
        parse_int_list(value, "depths")
    assert message in str(info.value) and "depths" in str(info.value) and "\n" not in str(info.value)
