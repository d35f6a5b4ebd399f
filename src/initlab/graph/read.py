"""``read_graph``: split the example, try the fx reader, fall back to hooks; leave the model as it was."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from initlab.graph.fx_reader import BadExample, Untraceable, read_fx
from initlab.graph.hooks_reader import read_hooks
from initlab.graph.ops import ModelGraph


def read_graph(model: nn.Module, example: Any) -> ModelGraph:
    """Read which nonlinearity every weight layer of ``model`` feeds, and its residual/concat role.

    ``example`` is a batch the model accepts: a tensor (or any single argument), a tuple of
    positional arguments, or a dict of keyword arguments; outputs may be tuples or dicts. The
    model runs on it (twice when fx tracing fails) and is left as it was (module docstring).

    Returns a :class:`ModelGraph`, one :class:`LayerInfo` per weight layer in execution order (a
    MultiheadAttention gives two: its packed in-projection, feeding attention, and ``out_proj``).
    ``is_output`` is not set by a path that enters a residual stream from its branch side, so a
    pre-norm transformer's last ``linear2`` is branch-final, not a classifier. Example:

        >>> g = read_graph(initlab.mlp(784, [128], 10), torch.randn(8, 784))
        >>> g["fc1"].activation_name, g["fc2"].is_output
        ('relu', True)
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    args, kwargs = split_example(example)
    leaves = pytree.tree_leaves((args, kwargs)) + list(model.parameters()) + list(model.buffers())
    cuda = sorted({t.device.index or 0 for t in leaves if isinstance(t, Tensor) and t.device.type == "cuda"})
    with preserved(model, cuda):
        try:
            return read_fx(model, args, kwargs)
        except BadExample:
            raise
        except Untraceable as e:
            reason = str(e)
        except Exception as e:  # anything fx cannot follow: read the call order instead
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    with preserved(model, cuda):
        return read_hooks(model, args, kwargs, reason)


def split_example(example: Any) -> tuple[tuple, dict]:
    """``example`` as (args, kwargs): a dict is keyword arguments, a tuple positional ones, anything else one argument."""
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, tuple):  # a list is one argument (forward(self, xs: list[Tensor]))
        return example, {}
    return (example,), {}


@contextlib.contextmanager
def preserved(model: nn.Module, cuda_devices: list[int]):
    """Restore train/eval flags, buffers, root attributes and the RNG after running ``model``."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    attrs = set(vars(model))
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for name in set(vars(model)) - attrs:  # the tracer's _tensor_constant<i>
            delattr(model, name)
