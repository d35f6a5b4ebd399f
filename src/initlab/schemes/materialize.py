"""Meta-device models: give their tensors memory without untying them, then initialize them.

Large models are built on PyTorch's ``meta`` device (shapes only, no memory) and given memory
later. ``torch.nn.Module.to_empty`` does that one module slot at a time, so a parameter that two
modules share (a tied embedding and output head) comes out as two separate parameters, and a
``Parameter``'s own attributes (μP's shape metadata, ``_is_hf_initialized``) are lost. ``materialize``
allocates one tensor per storage instead: every slot that held the same ``Parameter`` gets the same
new ``Parameter`` (attributes copied), and tensors that were views of one storage are views of one
new storage. Floating-point tensors are filled with NaN, so whatever no initialization writes is
loud, not yesterday's memory.

``initialize`` calls :func:`materialize_for_init` first: a model with tensors on ``meta`` is
materialized on ``device`` (default: the generator's device, else the CPU), its norm layers' running
statistics are reset (``reset_running_stats``, no randomness), and the scheme then draws exactly what
it draws on the same model built eagerly, from the same generator: the two are bit-identical for
every tensor the rules cover. Other buffers have no value after materialization (their module
computed them in ``__init__``: rotary frequencies, position indices); they stay NaN (integer ones 0)
and are named in a warning.
"""
from __future__ import annotations

import contextvars
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

META = torch.device("meta")
_KEEP_META: contextvars.ContextVar[bool] = contextvars.ContextVar("initlab_keep_meta", default=False)


@contextmanager
def keep_meta() -> Iterator[None]:
    """Within the block ``initialize`` leaves meta tensors on ``meta`` (no values are drawn for them): how
    :mod:`initlab.schemes.sharded` records what ``initialize`` would do without allocating the model."""
    token = _KEEP_META.set(True)
    try:
        yield
    finally:
        _KEEP_META.reset(token)


def _slots(module: nn.Module) -> Iterator[tuple[nn.Module, str, str, Tensor]]:
    """(owner, "param" | "buffer", attribute name, tensor) for every tensor slot, shared ones repeated."""
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None:
                yield m, "param", name, p
        for name, b in m._buffers.items():
            if b is not None:
                yield m, "buffer", name, b


def is_meta(module: nn.Module) -> bool:
    """True when any parameter or buffer of ``module`` lives on the ``meta`` device (shapes, no values)."""
    return any(t.is_meta for *_, t in _slots(module))


def require_materialized(module: nn.Module, what: str) -> None:
    """Raise a one-line ValueError when ``module`` has meta tensors: ``what`` (e.g. "audit") needs values.

    Example:
        >>> require_materialized(model, "probe")  # ValueError on a model built under torch.device("meta")
    """
    meta = [f"{n}" for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if meta:
        shown = ", ".join(meta[:3]) + (f" and {len(meta) - 3} more" if len(meta) > 3 else "")
        raise ValueError(f"{what} runs the model forward, but {type(module).__name__} has {len(meta)} tensor(s) on the "
                         f"meta device ({shown}); initialize it first with initialize(model, scheme, device=...)")


def storage_key(t: Tensor) -> int:
    """Identity of ``t``'s storage, also for meta tensors (whose data pointer is always 0)."""
    return t.untyped_storage()._cdata


def _extent(t: Tensor) -> int:
    """Elements of storage ``t`` reaches: offset + the last element's position + 1."""
    if t.numel() == 0:
        return t.storage_offset()
    return t.storage_offset() + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1


def _sentinel(base: Tensor) -> None:
    if base.is_floating_point() or base.is_complex():
        base.fill_(float("nan"))
    else:
        base.zero_()


def materialize(module: nn.Module, device: torch.device | str = "cpu", *, only_meta: bool = True) -> nn.Module:
    """Give every meta tensor of ``module`` memory on ``device``, in place; return the module.

    Unlike ``module.to_empty(device=...)`` this keeps ties: a ``Parameter`` shared by several
    modules stays one ``Parameter`` (with its Python attributes), and tensors that shared a storage
    still share one. New floating-point tensors hold NaN, integer ones 0, until something writes
    them. With ``only_meta=False`` every tensor is replaced (the values are dropped), which is how
    :func:`initlab.coverage` gives an eager model fresh storage.

    Example:
        >>> with torch.device("meta"):
        ...     net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        >>> net[1].weight = net[0].weight
        >>> materialize(net)[1].weight is net[0].weight
        True
    """
    device = torch.device(device)
    if device.type == "meta":
        raise ValueError("materialize needs a real device to allocate on, got 'meta'; e.g. 'cpu' or 'cuda'")
    slots = [s for s in _slots(module) if s[3].is_meta or not only_meta]
    groups: dict[tuple[int, torch.dtype], list[Tensor]] = {}
    seen: set[int] = set()
    for *_, t in slots:
        if id(t) not in seen:
            seen.add(id(t))
            groups.setdefault((storage_key(t), t.dtype), []).append(t)
    new: dict[int, Tensor] = {}
    for (_, dtype), members in groups.items():
        base = torch.empty(max(_extent(t) for t in members), dtype=dtype, device=device)
        with torch.no_grad():
            _sentinel(base)
        for t in members:
            data = base.as_strided(t.shape, t.stride(), t.storage_offset())
            if isinstance(t, nn.Parameter):
                p = nn.Parameter(data, requires_grad=t.requires_grad)
                p.__dict__.update(t.__dict__)  # μP's infshape, transformers' flags, ...
                new[id(t)] = p
            else:
                new[id(t)] = data
    for m, kind, name, t in slots:
        (m._parameters if kind == "param" else m._buffers)[name] = new[id(t)]
    return module


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return torch.device(generator.device) if generator is not None else torch.device("cpu")


def materialize_for_init(module: nn.Module, generator: torch.Generator | None,
                         device: torch.device | str | None) -> nn.Module:
    """What ``initialize`` does first: materialize a (partly) meta model on ``device`` (default: the
    generator's device) and reset its norm layers' running statistics; a model without meta tensors
    passes through (``device`` must then be None or where it already is)."""
    if _KEEP_META.get():
        return module
    if not is_meta(module):
        if device is not None:
            want = torch.device(device)
            where = {t.device for *_, t in _slots(module)}
            if where and any(d.type != want.type or (want.index is not None and d.index != want.index) for d in where):
                raise ValueError(f"device={str(device)!r} materializes meta tensors, but {type(module).__name__} is "
                                 f"already on {', '.join(sorted(map(str, where)))}; move it with .to() instead")
        return module
    target = torch.device(device) if device is not None else _generator_device(generator)
    meta_buffers = [(name, m, b) for name, m in module.named_modules()
                    for b, t in m._buffers.items() if t is not None and t.is_meta]
    materialize(module, target)
    unset = []
    for name, m, b in meta_buffers:
        if callable(getattr(m, "reset_running_stats", None)):
            m.reset_running_stats()  # deterministic (zeros, ones), no randomness; idempotent
        else:
            unset.append(f"{name}.{b}" if name else b)
    if unset:
        warnings.warn(f"buffer(s) {', '.join(unset[:5])}{' …' if len(unset) > 5 else ''} have no value after "
                      "materialization (their module computes them in __init__); set them yourself", stacklevel=3)
    return module
