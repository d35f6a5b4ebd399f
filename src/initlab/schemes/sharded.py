"""Sharded parameters: each rank initializes only its shard, and the full weights do not depend on the world size.

``initialize_sharded(model, rules, seed=...)`` takes a model whose parameters are DTensors (FSDP2's
``fully_shard``, ``distribute_module`` / ``distribute_tensor`` with ``Shard`` or ``Replicate``
placements), or plain tensors. It works in two steps, without communication:

1. **Record.** Every parameter is swapped for a full-shape stand-in on the ``meta`` device and
   :func:`initlab.initialize` runs on the model under a ``TorchDispatchMode`` that records, per
   parameter, the ops that write it: which scheme, fans, blocks (q/k/v, gates), bias policy and
   padding row ``initialize`` would apply, as aten ops on views (``uniform_(-b, b)`` on rows
   0..E, ``fill_(0)`` on row 3, ...). Nothing is allocated.
2. **Replay on the local shard.** Each op is replayed in float64 on the elements of the local
   shard only. Random ops draw from counter-based streams: element ``g`` (its flat position in the
   full tensor) of the ``k``-th random op of the parameter named ``name`` gets
   two words of ``Philox4x32-10(counter=(⌊g/2⌋ mod 2³², ⌊g/2⌋ div 2³², k, 0), key=blake2b(seed, name))``
   (words 0, 1 for even ``g``, 2, 3 for odd) made into a 53-bit uniform ``u`` in (0, 1); ``normal_`` is ``mean + std·Φ⁻¹(u)`` (inverse CDF, ``scipy.special.ndtri``),
   ``uniform_`` is ``a + (b - a)·u``; ``erfinv_``, ``mul_``, ``add_``, ``clamp_``, ``fill_``, ``zero_``
   act elementwise. An element's value is a function of (seed, name, k, g) alone, so the full
   weights are bit-identical for every world size and placement and to ``initialize_sharded`` on
   the unsharded model (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", for Philox).

**Exact by counter streams** (each element on its own): zero, constant, normal, uniform,
trunc_normal, variance_scaling, xavier_*, kaiming_*, lecun_*, pytorch_default, the bias policies,
norm defaults, padding rows and forget-gate biases. **Whole-matrix schemes** (orthogonal, the identity
family, anything whose ops are not elementwise: a QR, a ``copy_`` from a computed matrix) are
detected while recording; for those each rank draws the *full* parameter on its CPU with
``torch.Generator().manual_seed(blake2b(seed, name))`` through the real scheme and keeps its shard:
still exact and independent of the world size, without a gather, at the cost of one full parameter
in memory (one at a time) and the redundant draw on every rank.

The values are *not* those of ``initialize(model, generator=torch.Generator().manual_seed(seed))``:
torch's generator is a sequential stream, which a shard cannot enter in the middle. Whole-model
schemes that run the model (auto, lsuv) are refused; parametrized weights (weight_norm, spectral_norm) are too.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import special
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from initlab.core.checks import MAX_INT, as_int
from initlab.schemes.apply import initialize, needs_example
from initlab.schemes.materialize import keep_meta, storage_key
from initlab.schemes.parametrized import module_slots

_MASK = np.uint64(0xFFFFFFFF)
_RANDOM = {"uniform_", "normal_", "trunc_normal_"}
_ELEMENTWISE = _RANDOM | {"fill_", "zero_", "erfinv_", "mul_", "div_", "add_", "sub_", "clamp_", "clamp_min_",
                          "clamp_max_", "neg_", "abs_"}
_CHUNK = 1 << 18  # elements replayed at once (bounds the float64 / uint64 working memory)


def philox4x32(counter: tuple, key: tuple[int, int], rounds: int = 10) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 (Salmon et al. 2011) on arrays of counters: four uint32 words (held in uint64) per counter.

    Known answer (Random123): counter 0, key 0 -> 0x6627e8d5 0xe169c58d 0xbc57ac4c 0x9b00dbd8.
    """
    c0, c1, c2, c3 = (np.asarray(x, dtype=np.uint64) for x in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & _MASK, (k1 + np.uint64(0xBB67AE85)) & _MASK
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2  # 32×32 -> 64 bits: exact in uint64
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _MASK
    return c0, c1, c2, c3


def stream_key(seed: int, name: str) -> tuple[int, int]:
    """The 64-bit Philox key of parameter ``name`` under ``seed`` (two 32-bit words)."""
    digest = int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little")
    return digest & 0xFFFFFFFF, digest >> 32


def uniforms(seed: int, name: str, op: int, index: np.ndarray) -> np.ndarray:
    """53-bit uniforms in (0, 1), one per flat element ``index`` of the ``op``-th random op of ``name``.

    Element ``g`` reads words (0, 1) of the Philox block at counter ``(g div 2, op)`` when ``g`` is even and
    words (2, 3) when it is odd, so one block serves two neighbours and each element depends on ``g`` alone.
    """
    g = np.asarray(index, dtype=np.uint64)
    if g.size == 0:
        return np.empty(0)
    lo, hi = int(g.min()) >> 1, int(g.max()) >> 1
    if hi - lo + 1 <= g.size:  # dense (the usual contiguous shard): one block per pair of neighbours
        c = np.arange(lo, hi + 1, dtype=np.uint64)
        words = philox4x32((c & _MASK, c >> np.uint64(32), np.full_like(c, op), np.zeros_like(c)),
                           stream_key(seed, name))
        pos = (g >> np.uint64(1)) - np.uint64(lo)
    else:
        c = g >> np.uint64(1)
        words = philox4x32((c & _MASK, c >> np.uint64(32), np.full_like(c, op), np.zeros_like(c)),
                           stream_key(seed, name))
        pos = np.arange(g.size)
    odd = (g & np.uint64(1)).astype(bool)
    a = np.where(odd, words[2][pos], words[0][pos])
    b = np.where(odd, words[3][pos], words[1][pos])
    return ((a >> np.uint64(5)).astype(np.float64) * 67108864.0 + (b >> np.uint64(6)).astype(np.float64) + 0.5) \
        / 9007199254740992.0


@dataclass
class _Program:
    """The ops that write one parameter, on views of its full (contiguous) tensor; ``opaque`` if not elementwise."""

    ops: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, (shape, stride, offset), args)
    opaque: str = ""  # why it cannot be replayed elementwise


def _scalar(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    if isinstance(x, Tensor) and x.dim() == 0 and not x.is_meta:
        return float(x)
    return None


# torch.nn.init functions that return at once on a meta tensor (no ops to record): stubs stand in for them
# while recording. trunc_normal_ is elementwise in distribution (its inverse CDF is replayed); the others
# need the whole matrix.
_WHOLE_MATRIX_INIT = ("orthogonal_", "dirac_", "sparse_")


@contextmanager
def _recording_stubs(rec: _Recorder) -> Iterator[None]:
    originals = {n: getattr(torch.nn.init, n) for n in ("trunc_normal_", *_WHOLE_MATRIX_INIT)}

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
        if not tensor.is_meta:
            return originals["trunc_normal_"](tensor, mean, std, a, b, generator=generator)
        rec.note(tensor, "trunc_normal_", (float(mean), float(std), float(a), float(b)))
        return tensor

    def whole(name):
        def stub(tensor, *args, **kwargs):
            if not tensor.is_meta:
                return originals[name](tensor, *args, **kwargs)
            rec.note(tensor, name, None)
            return tensor
        return stub

    try:
        torch.nn.init.trunc_normal_ = trunc_normal_
        for n in _WHOLE_MATRIX_INIT:
            setattr(torch.nn.init, n, whole(n))
        yield
    finally:
        for n, fn in originals.items():
            setattr(torch.nn.init, n, fn)


class _Recorder(TorchDispatchMode):
    """Records the writes ``initialize`` makes to parameter stand-ins and to the copies it draws into."""

    def __init__(self, params: dict[int, str]):
        super().__init__()
        self.params = params  # storage key -> parameter name
        self.temps: dict[int, tuple[str, _Program, Any]] = {}  # copies of a parameter: key -> (name, program, storage)
        self.programs: dict[str, _Program] = {}

    def _program(self, t: Tensor) -> _Program | None:
        key = storage_key(t)
        if key in self.temps:
            return self.temps[key][1]
        if key in self.params:
            return self.programs.setdefault(self.params[key], _Program())
        return None

    def note(self, t: Tensor, name: str, args: tuple | None) -> None:
        """A torch.nn.init stub's call on ``t``: an elementwise op with ``args``, or (None) a whole-matrix one."""
        prog = self._program(t)
        if prog is None:
            return
        if args is None:
            prog.opaque = prog.opaque or f"{name} needs the whole matrix"
        else:
            prog.ops.append((name, (tuple(t.shape), tuple(t.stride()), t.storage_offset()), args))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name in ("clone", "_to_copy") and isinstance(args[0], Tensor) and isinstance(out, Tensor):
            src = storage_key(args[0])  # initialize draws into a copy of the parameter (float32 for 16-bit ones)
            if src in self.params:
                self.temps[storage_key(out)] = (self.params[src], _Program(), out.untyped_storage())
            elif src in self.temps:
                pname, prog, _ = self.temps[src]
                self.temps[storage_key(out)] = (pname, _Program(list(prog.ops), prog.opaque), out.untyped_storage())
            return out
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            t = args[i] if i < len(args) else kwargs.get(arg.name)
            prog = self._program(t) if isinstance(t, Tensor) else None
            if prog is None:
                continue
            geo = (tuple(t.shape), tuple(t.stride()), t.storage_offset())
            if name == "copy_" and storage_key(args[1]) in self.temps and storage_key(t) in self.params:
                src = args[1]
                whole = t.is_contiguous() and t.storage_offset() == 0 and src.is_contiguous() \
                    and src.storage_offset() == 0 and src.shape == t.shape
                temp = self.temps[storage_key(src)][1]
                prog.ops[:] = temp.ops if whole else []
                prog.opaque = temp.opaque if whole else "written from a part of its copy"
                continue
            values = [a for a in args[1:]] + list(kwargs.values())
            scalars = [_scalar(a) for a in values if not isinstance(a, (torch.Generator, type(None)))]
            if name not in _ELEMENTWISE or any(s is None for s in scalars):
                prog.opaque = prog.opaque or f"{name} is not elementwise"
            else:
                prog.ops.append((name, geo, self._args(name, args, kwargs)))
        return out

    @staticmethod
    def _args(name: str, args: tuple, kwargs: dict) -> tuple:
        rest = list(args[1:])
        get = lambda i, key, default: _scalar(rest[i]) if len(rest) > i else _scalar(kwargs.get(key, default))
        if name == "uniform_":
            return get(0, "from", 0.0), get(1, "to", 1.0)
        if name == "normal_":
            return get(0, "mean", 0.0), get(1, "std", 1.0)
        if name in ("add_", "sub_"):
            return get(0, "other", 0.0), get(1, "alpha", 1.0)
        if name == "clamp_":
            lo = rest[0] if rest else kwargs.get("min")
            hi = rest[1] if len(rest) > 1 else kwargs.get("max")
            return (-math.inf if lo is None else _scalar(lo)), (math.inf if hi is None else _scalar(hi))
        return tuple(_scalar(a) for a in rest if not isinstance(a, torch.Generator))


def _in_view(g: np.ndarray, geo: tuple, numel: int):
    """Which flat positions ``g`` of the full contiguous tensor (of ``numel`` elements) the view ``geo``
    (shape, stride, offset) covers: a mask, or ``slice(None)`` for the whole tensor."""
    shape, stride, offset = geo
    if offset == 0 and math.prod(shape) == numel and list(stride) == [math.prod(shape[d + 1:]) for d in range(len(shape))]:
        return slice(None)
    rem = g.astype(np.int64) - offset
    ok = rem >= 0
    for size, st in sorted(zip(shape, stride), key=lambda d: -d[1]):
        if st == 0:
            continue
        idx = rem // st
        ok &= idx < size
        rem = rem - idx * st
    return ok & (rem == 0)


def _replay(ops: list, seed: int, name: str, g: np.ndarray, v: np.ndarray, numel: int) -> np.ndarray:
    k = 0
    for op, geo, a in ops:
        m = _in_view(g, geo, numel)
        if op in _RANDOM:
            u = uniforms(seed, name, k, g[m])
            k += 1
            if op == "uniform_":
                v[m] = a[0] + (a[1] - a[0]) * u
            elif op == "normal_":
                v[m] = a[0] + a[1] * special.ndtri(u)
            else:  # trunc_normal_(mean, std, a, b) by its inverse CDF
                lo, hi = special.ndtr((a[2] - a[0]) / a[1]), special.ndtr((a[3] - a[0]) / a[1])
                v[m] = np.clip(a[0] + a[1] * special.ndtri(lo + (hi - lo) * u), a[2], a[3])
        elif op == "fill_":
            v[m] = a[0]
        elif op == "zero_":
            v[m] = 0.0
        elif op == "erfinv_":
            v[m] = special.erfinv(v[m])
        elif op == "mul_":
            v[m] = v[m] * a[0]
        elif op == "div_":
            v[m] = v[m] / a[0]
        elif op == "add_":
            v[m] = v[m] + a[1] * a[0] if a[1] != 1.0 else v[m] + a[0]
        elif op == "sub_":
            v[m] = v[m] - a[1] * a[0] if a[1] != 1.0 else v[m] - a[0]
        elif op == "clamp_":
            v[m] = np.clip(v[m], a[0], a[1])
        elif op == "clamp_min_":
            v[m] = np.maximum(v[m], a[0])
        elif op == "clamp_max_":
            v[m] = np.minimum(v[m], a[0])
        elif op == "neg_":
            v[m] = -v[m]
        elif op == "abs_":
            v[m] = np.abs(v[m])
    return v


def _local(p: Tensor) -> tuple[Tensor, tuple[int, ...], tuple[int, ...]]:
    """(local tensor, its shape, its offset in the full tensor) of a DTensor or a plain tensor."""
    try:
        from torch.distributed.tensor import DTensor  # optional: torch builds without distributed
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    except ImportError:  # pragma: no cover
        DTensor = None
    if DTensor is not None and isinstance(p, DTensor):
        if any(pl.is_partial() for pl in p.placements):
            raise ValueError(f"a DTensor with a Partial placement has no shard to initialize: {p.placements}")
        shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
        return p.to_local(), tuple(shape), tuple(offset)
    return p, tuple(p.shape), (0,) * p.dim()


def _flat_index_chunks(full: tuple[int, ...], shape: tuple[int, ...], offset: tuple[int, ...]) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows of the local block, flat positions in the full tensor) in chunks of about ``_CHUNK`` elements."""
    if not shape:
        yield slice(None), np.zeros(1, dtype=np.int64)
        return
    strides = [math.prod(full[d + 1:]) for d in range(len(full))]
    rest = np.zeros(1, dtype=np.int64)
    for d in range(1, len(shape)):
        rest = (rest[:, None] + (offset[d] + np.arange(shape[d], dtype=np.int64))[None, :] * strides[d]).ravel()
    rows = max(1, _CHUNK // max(1, rest.size))
    for r0 in range(0, shape[0], rows):
        r1 = min(shape[0], r0 + rows)
        g = ((offset[0] + np.arange(r0, r1, dtype=np.int64))[:, None] * strides[0] + rest[None, :]).ravel()
        yield slice(r0, r1), g


@contextmanager
def _stand_ins(model: nn.Module, real: str | None = None) -> Iterator[dict[int, str]]:
    """Swap every parameter for a full-shape meta stand-in (a CPU one for ``real``), ties kept; restore on exit."""
    names: dict[int, str] = {}
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
    new: dict[int, nn.Parameter] = {}
    saved = []
    for m in model.modules():
        for key, p in list(m._parameters.items()):
            if p is None:
                continue
            if id(p) not in new:
                device = "cpu" if names[id(p)] == real else "meta"
                new[id(p)] = nn.Parameter(torch.empty(tuple(p.shape), dtype=p.dtype, device=device),
                                          requires_grad=p.requires_grad)
            saved.append((m, key, p))
            m._parameters[key] = new[id(p)]
    try:
        yield {storage_key(new[i]): n for i, n in names.items()}, {n: new[i] for i, n in names.items()}
    finally:
        for m, key, p in saved:
            m._parameters[key] = p


def initialize_sharded(model: nn.Module, rules: Any, *, seed: int, recurrent: Any = None, forget_bias: float | None = None,
                       strict: bool = False, **params: Any) -> nn.Module:
    """Initialize each rank's shard of ``model``'s parameters (DTensor/FSDP2 or plain) by ``rules``; return the model.

    The full weights are bit-identical for every world size and placement and to this function on
    the unsharded model, for every tensor scheme (see the module docstring for how: counter-based
    streams for elementwise schemes, a per-parameter full draw for whole-matrix ones). ``rules``,
    ``recurrent``, ``forget_bias``, ``strict`` and ``**params`` are ``initialize``'s. Norm layers'
    running statistics are reset. Call it on every rank (no communication happens).

    Example:
        >>> with torch.device("meta"):
        ...     net = Transformer(...)
        >>> for block in net.blocks: fully_shard(block)
        >>> fully_shard(net); net.to_empty(device="cpu")
        >>> initialize_sharded(net, {"Linear": "he", "Embedding": "normal(std=0.02)"}, seed=0)
    """
    seed = as_int("seed", seed, minimum=0, maximum=MAX_INT)
    if needs_example(rules):
        raise ValueError("initialize_sharded draws each shard without running the model; schemes that read the model "
                         "on an example batch (auto, lsuv) need it whole: initialize a materialized copy instead")
    derived = [f"{n}.{k}" if n else k for n, m in model.named_modules() for k, slot in module_slots(m).items()
               if slot.kind != "parameter"]
    if derived:
        raise ValueError(f"initialize_sharded writes parameters directly, but {derived[0]!r} is computed from others "
                         "(weight_norm, spectral_norm, a parametrization); initialize that model with initialize instead")
    on_meta = [n for n, p in model.named_parameters() if _local(p)[0].is_meta]
    if on_meta:
        raise ValueError(f"{type(model).__name__} has {len(on_meta)} parameter(s) on the meta device ({on_meta[0]}, ...); "
                         "give them memory first: model.to_empty(device=...) after fully_shard, or materialize(model)")
    kw = dict(recurrent=recurrent, forget_bias=forget_bias, strict=strict, **params)
    with _stand_ins(model) as (keys, _), keep_meta():
        rec = _Recorder(keys)
        with _recording_stubs(rec), rec:
            initialize(model, rules, generator=torch.Generator().manual_seed(seed), **kw)
    for name, p in model.named_parameters():
        prog = rec.programs.get(name)
        if prog is None or not (prog.ops or prog.opaque):
            continue  # nothing covers it: left as it is, as initialize leaves it (and warned about it)
        local, shape, offset = _local(p)
        with torch.no_grad():
            if prog.opaque:
                _draw_whole(model, name, rules, seed, kw, local, shape, offset)
                continue
            for rows, g in _flat_index_chunks(tuple(p.shape), shape, offset):
                block = local[rows] if local.dim() else local
                v = _replay(prog.ops, seed, name, g, block.detach().reshape(-1).double().cpu().numpy().copy(), p.numel())
                block.copy_(torch.from_numpy(v).reshape(block.shape).to(local.dtype))
    for m in model.modules():
        if callable(getattr(m, "reset_running_stats", None)):
            m.reset_running_stats()
    return model


def _draw_whole(model, name, rules, seed, kw, local, shape, offset) -> None:
    """A whole-matrix scheme's parameter: drawn in full on the CPU from its own stream, the local block kept."""
    with _stand_ins(model, real=name) as (_, stand), keep_meta():
        full = stand[name]
        with torch.no_grad():
            full.fill_(math.nan)
        stream = int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little") >> 1
        initialize(model, rules, generator=torch.Generator().manual_seed(stream), **kw)
        block = full.detach()[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
        local.copy_(block.to(local.device, local.dtype))
