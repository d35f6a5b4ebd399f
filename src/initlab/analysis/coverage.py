"""Coverage of a model's own initialization: what its init path never writes, writes twice, unties or loses.

What it does, as on the meta-device path of large-model training (build on ``meta``, allocate,
initialize): the model is built (a factory) or copied (a model) on ``meta``, given fresh storage
filled with NaN (:func:`initlab.schemes.materialize.materialize`, which keeps ties), and its own
init path runs under a ``TorchDispatchMode`` that sees every aten op writing a tracked storage:

1. *layer defaults*: ``reset_parameters()`` of every submodule that has one, in ``modules()``
   order (what FSDP's meta materialization and torch's ``reset_parameters`` contract, RFC #104187, call);
2. *the model's init*: ``init`` if given (a method name or ``fn(model)``), else the root's
   ``init_weights()`` (timm, transformers, torchtitan) or, in a wrapper, that of each outermost
   submodule that has one, else the root's ``reset_parameters()``.

A write is an op that sets elements without reading them (``fill_``, ``zero_``, ``normal_``,
``uniform_``, ``copy_``, ``out=`` ops, ...); read-modify ops (``mul_``, ``clamp_``, ``erfinv_``)
continue the write they follow. Writes are attributed to the innermost module whose
``reset_parameters`` / ``_reset_parameters`` / ``_init_weights(module)`` / ``init_weights`` is
running, one *call* per invocation, and recorded per element. An element is

* **never written** when no call wrote it (it is still the allocator's value, NaN here);
* **written twice** when a call overwrites an element an earlier call wrote, unless the later
  call belongs to a later phase (the model's init over a layer default), to a strict ancestor of
  the earlier call's module (a model-level init specializing its layers: GPT-2's scaled
  ``c_proj``, timm's ``zero_init_last``), or both calls' modules own the tensor (a tied weight
  each owner initializes); a parent's ``reset_parameters`` that a child's own reset then
  overwrites is the fault RFC #104187 describes;
* **tied, disagreeing** when tensors that were one storage in the source model (or that the model
  declares tied: transformers' ``all_tied_weights_keys``, or ``ties=``) end up different.
* **differs from eager** when it ends up drawn from another distribution than in the model built
  eagerly (std more than 1.5× apart, another constant): its init lives in ``__init__`` (torchvision's
  ResNet, ``nn.Transformer``), which the meta-device path does not run.

Example:
    >>> cov = coverage(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> cov.summary()
    'Sequential: 4 tensors, 58 elements; path: reset_parameters ×2; all written once; no faults'
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from initlab.core.checks import as_choice, as_int
from initlab.data import load_dataset
from initlab.models import make_model, parse_int_list
from initlab.schemes.materialize import materialize, storage_key

# ops that set their written argument without reading it (the rest of the in-place ops modify it)
_SETTERS = {"fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_",
            "log_normal_", "cauchy_", "copy_", "set_", "full_like", "eye", "randn", "rand", "randperm"}
STATUSES = ("ok", "never written", "partly written", "written twice", "differs from eager", "tied, disagreeing")
COLUMNS = ("tensor", "kind", "shape", "numel", "unwritten", "twice", "overridden", "nan", "std", "eager_std", "writers",
           "tied_with", "status")
PATHS = ("initlab", "to_empty")


@dataclass(frozen=True)
class TensorCoverage:
    """One parameter or buffer (tied names together): what the init path did to its elements."""

    tensor: str  # qualified name (the first of its tied names)
    kind: str  # "parameter" | "buffer"
    shape: tuple[int, ...]
    numel: int
    unwritten: int  # elements no call wrote
    twice: int  # elements a later call overwrote (not a later phase, an ancestor or a co-owner)
    overridden: int  # elements a later phase or an ancestor module's init overwrote (by design)
    nan: int  # elements still NaN (the allocator's fill) after the init path
    writers: tuple[str, ...]  # modules whose calls last wrote its elements ("(model)" for the root)
    tied_with: tuple[str, ...] = ()  # other names of the same tensor, or declared tied to it
    tie_ok: bool = True  # tied names hold equal values after the init path
    std: float = math.nan  # after the init path
    eager_std: float = math.nan  # of the model built eagerly (NaN when not compared)
    eager_differs: bool = False  # another distribution than the eager build's (an init in __init__ that is lost)

    @property
    def status(self) -> str:
        if not self.tie_ok:
            return "tied, disagreeing"
        if self.unwritten == self.numel and self.numel:
            return "never written"
        if self.unwritten:
            return "partly written"
        if self.twice:
            return "written twice"
        return "differs from eager" if self.eager_differs else "ok"


@dataclass(frozen=True)
class Coverage:
    """``initlab.coverage``'s result: one row per tensor, the init path that ran, and the faults."""

    model: str  # the model's class name
    path: tuple[str, ...]  # the calls made: "reset_parameters ×12", "init_weights()"
    tensors: tuple[TensorCoverage, ...]
    materialized_by: str = "initlab"

    @property
    def faults(self) -> tuple[TensorCoverage, ...]:
        """Rows whose status is not "ok"."""
        return tuple(t for t in self.tensors if t.status != "ok")

    def count(self, status: str) -> int:
        """How many tensors have ``status`` (one of ``STATUSES``)."""
        as_choice("status", status, STATUSES)
        return sum(t.status == status for t in self.tensors)

    def summary(self) -> str:
        """One line: tensors, the path, and each fault kind's count."""
        n = sum(t.numel for t in self.tensors)
        head = f"{self.model}: {len(self.tensors)} tensors, {n} elements; path: {', '.join(self.path) or '(none)'}"
        if not self.faults:
            return f"{head}; all written once; no faults"
        kinds = [f"{self.count(s)} {s}" for s in STATUSES[1:] if self.count(s)]
        return f"{head}; {', '.join(kinds)}"

    def to_frame(self):
        """A pandas DataFrame with ``COLUMNS``."""
        import pandas as pd

        rows = [{"tensor": t.tensor, "kind": t.kind, "shape": "×".join(map(str, t.shape)) or "scalar", "numel": t.numel,
                 "unwritten": t.unwritten, "twice": t.twice, "overridden": t.overridden, "nan": t.nan,
                 "std": t.std, "eager_std": t.eager_std, "writers": ", ".join(t.writers), "tied_with": ", ".join(t.tied_with), "status": t.status}
                for t in self.tensors]
        return pd.DataFrame(rows, columns=list(COLUMNS))


@dataclass
class _Track:
    """Per element of one storage: the call that last wrote it, and whether it was written twice."""

    storage: Any  # kept alive so its address cannot be reused by another tensor
    last: Tensor
    twice: Tensor
    overridden: Tensor
    owners: set[int] = field(default_factory=set)  # modules holding a tensor of this storage directly


def _new_track(t: Tensor) -> _Track:
    n = t.untyped_storage().nbytes() // max(t.element_size(), 1)
    return _Track(t.untyped_storage(), torch.full((n,), -1, dtype=torch.int32),
                  torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool))


class _Writes(TorchDispatchMode):
    """Attributes every write to a tracked storage to the running init call (see the module docstring)."""

    def __init__(self, modules: list[tuple[str, nn.Module]]):
        super().__init__()
        self.names = [n for n, _ in modules]
        self.index = {id(m): i for i, (_, m) in reversed(list(enumerate(modules)))}
        self.tracks: dict[int, _Track] = {}
        self.calls: list[tuple[int, int]] = []  # call id -> (module index, phase)
        self.stack: list[int] = []
        self.phase = 0

    def track(self, t: Tensor, owner: nn.Module | None = None) -> _Track:
        key = t.untyped_storage().data_ptr()
        if key not in self.tracks:
            self.tracks[key] = _new_track(t)
        if owner is not None:
            self.tracks[key].owners.add(self.index[id(owner)])
        return self.tracks[key]

    @contextmanager
    def acting(self, module: nn.Module) -> Iterator[None]:
        """Writes inside the block belong to one call of ``module`` (nested calls of the same module join it)."""
        i = self.index.get(id(module), 0)
        if self.stack and self.calls[self.stack[-1]] == (i, self.phase):
            yield
            return
        self.calls.append((i, self.phase))
        self.stack.append(len(self.calls) - 1)
        try:
            yield
        finally:
            self.stack.pop()

    def _ancestor(self, a: int, b: int) -> bool:
        """Module ``a`` strictly contains module ``b``."""
        na, nb = self.names[a], self.names[b]
        return a != b and (na == "" or nb.startswith(na + "."))

    def _mark(self, track: _Track, t: Tensor) -> None:
        if not self.stack:  # a write outside any init call: the root's
            self.calls.append((0, self.phase))
            self.stack.append(len(self.calls) - 1)
        cur = self.stack[-1]
        geo = (t.shape, t.stride(), t.storage_offset())
        last = track.last.as_strided(*geo)
        cmod, cphase = self.calls[cur]
        for prev in torch.unique(last).tolist():
            if prev < 0 or prev == cur:
                continue
            pmod, pphase = self.calls[prev]
            fine = pphase < cphase or self._ancestor(cmod, pmod) or (cmod != pmod and {cmod, pmod} <= track.owners)
            (track.overridden if fine else track.twice).as_strided(*geo).masked_fill_(last == prev, True)
        last.fill_(cur)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        for i, arg in enumerate(func._schema.arguments):
            info = arg.alias_info
            if info is None or not info.is_write:
                continue
            t = args[i] if i < len(args) else kwargs.get(arg.name)
            if not isinstance(t, Tensor) or t.device.type == "meta":
                continue
            if name in _SETTERS or arg.is_out:
                self._mark(self.track(t), t)
        return out


def _init_methods(model: nn.Module, mode: _Writes) -> list[tuple[nn.Module, str, Callable]]:
    """Wrap each module's init methods (instance attributes) so their writes are attributed to it."""
    wrapped = []
    for m in model.modules():
        for attr in ("reset_parameters", "_reset_parameters", "init_weights"):
            fn = getattr(m, attr, None)
            if callable(fn) and attr not in m.__dict__:
                def call(*a, _fn=fn, _m=m, **k):
                    with mode.acting(_m):
                        return _fn(*a, **k)
                wrapped.append((m, attr, call))
        fn = getattr(m, "_init_weights", None)  # transformers: _init_weights(module) initializes that module
        if callable(fn) and "_init_weights" not in m.__dict__:
            def call_on(target, *a, _fn=fn, **k):
                with mode.acting(target):
                    return _fn(target, *a, **k)
            wrapped.append((m, "_init_weights", call_on))
    for m, attr, fn in wrapped:
        object.__setattr__(m, attr, fn)
    return wrapped


def _outermost(net: nn.Module, method: str) -> list[tuple[str, nn.Module]]:
    """Modules with ``method`` that no other such module contains (the root alone when it has it)."""
    found: list[tuple[str, nn.Module]] = []
    for name, m in net.named_modules():
        if callable(getattr(m, method, None)) and not any(n == "" or name.startswith(n + ".") for n, _ in found):
            found.append((name, m))
    return found


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors are meta (no values copied), ties and shared storage kept."""
    memo: dict[int, Any] = {}
    views: dict[tuple[int, torch.dtype], Tensor] = {}
    for _, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) in memo:
            continue
        key = (t.untyped_storage().data_ptr() or storage_key(t), t.dtype)
        if key not in views:
            views[key] = torch.empty(t.untyped_storage().nbytes() // max(t.element_size(), 1), dtype=t.dtype,
                                     device="meta")
        data = views[key].as_strided(t.shape, t.stride(), t.storage_offset())
        memo[id(t)] = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else data
    return copy.deepcopy(model, memo)


def _declared_ties(model: nn.Module, ties: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    groups = [tuple(g) for g in ties]
    declared = getattr(model, "all_tied_weights_keys", None)  # transformers 5: the ties this config makes
    if declared is None:
        declared = getattr(model, "_tied_weights_keys", None)
    if isinstance(declared, dict):
        groups += [(str(k), str(v)) for k, v in declared.items()]
    return groups


def _tensor_groups(model: nn.Module) -> tuple[dict[int, list[tuple[str, str, Tensor]]], dict[str, int]]:
    """Names by storage (tied names together) and the storage of each name."""
    groups: dict[int, list[tuple[str, str, Tensor]]] = {}
    key_of: dict[str, int] = {}
    for kind, items in (("parameter", model.named_parameters(remove_duplicate=False)),
                        ("buffer", model.named_buffers(remove_duplicate=False))):
        for name, t in items:
            key = storage_key(t)
            groups.setdefault(key, []).append((name, kind, t))
            key_of[name] = key
    return groups, key_of


def coverage(model: nn.Module | Callable[[], nn.Module], *, init: str | Callable[[nn.Module], Any] | None = None,
             ties: Sequence[Sequence[str]] = (), materialize_with: str = "initlab", eager: bool = True) -> Coverage:
    """Run a model's own init path on fresh storage and report what it never writes, writes twice or unties.

    Args:
        model: a model (it is not changed: a meta copy is used) or a factory ``() -> nn.Module``
            (called under ``torch.device("meta")``, so nothing is allocated while it builds).
        init: the model-level init to run after the layers' ``reset_parameters``: a method name of
            the model (``"init_weights"``) or ``fn(model)``; default: the model's ``init_weights()``
            if it has one, else its own ``reset_parameters()``.
        ties: groups of qualified names that must hold equal values afterwards (added to the ties
            found in the source model and to transformers' declared ties).
        materialize_with: ``"initlab"`` (keeps ties) or ``"to_empty"`` (``torch.nn.Module.to_empty``,
            which gives each module slot its own tensor: run it to see what plain ``to_empty`` breaks).
        eager: also compare each tensor with the model built eagerly (the factory called on the CPU,
            global RNG state restored afterwards; or the given model's current values): a tensor
            whose distribution differs (std off by more than 1.5×, another constant, a random
            tensor that was constant) was initialized in ``__init__`` by code the init path does
            not run. Pass False for a trained model or to skip the second build.

    Raises:
        ValueError: ``init`` names no method of the model, or an unknown ``materialize_with``.
        TypeError: ``model`` is neither a module nor a callable returning one.
    """
    as_choice("materialize_with", materialize_with, PATHS)
    reference = None
    if isinstance(model, nn.Module):
        net = _meta_copy(model)
        reference = model if eager else None
    elif callable(model):
        with torch.device("meta"):
            net = model()
        if not isinstance(net, nn.Module):
            raise TypeError(f"the model factory returned {type(net).__name__}, not an nn.Module")
        if eager:
            with torch.random.fork_rng(devices=[]):
                reference = model()
    else:
        raise TypeError(f"coverage needs an nn.Module or a factory returning one, got {type(model).__name__}")
    if isinstance(init, str) and not callable(getattr(net, init, None)):  # a value error: the name, not its type
        raise ValueError(  # noqa: TRY004
            f"{type(net).__name__} has no method {init!r} to initialize it; give a method name or fn(model)")
    source_groups, _ = _tensor_groups(net)
    for m in net.modules():  # a copy of a built transformers model says it is initialized: start afresh
        m.__dict__.pop("_is_hf_initialized", None)
    if materialize_with == "to_empty":
        net.to_empty(device="cpu")
        with torch.no_grad():
            for t in [*net.parameters(), *net.buffers()]:
                t.fill_(math.nan) if t.is_floating_point() else t.zero_()
    else:
        materialize(net, "cpu")
    for t in [*net.parameters(), *net.buffers()]:
        t.__dict__.pop("_is_hf_initialized", None)
    modules = list(net.named_modules(remove_duplicate=True))
    mode = _Writes(modules)
    for m in net.modules():
        for t in [*m._parameters.values(), *m._buffers.values()]:
            if t is not None:
                mode.track(t, owner=m)
    wrapped = _init_methods(net, mode)
    path: list[str] = []
    try:
        with torch.no_grad(), mode:
            resets = 0
            for m in net.modules():
                if m is not net and callable(getattr(m, "reset_parameters", None)):
                    m.reset_parameters()
                    resets += 1
            if resets:
                path.append(f"reset_parameters ×{resets}")
            mode.phase = 1
            owners = _outermost(net, "init_weights")
            with mode.acting(net):
                if callable(init):
                    init(net)
                    path.append(f"{getattr(init, '__name__', 'init')}(model)")
                elif init is not None:
                    getattr(net, init)()
                    path.append(f"{init}()")
                elif owners:  # the model's, or (in a wrapper) each outermost submodel's
                    for name, m in owners:
                        m.init_weights()
                        path.append(f"{name + '.' if name else ''}init_weights()")
                elif callable(getattr(net, "reset_parameters", None)):
                    net.reset_parameters()
                    path.append("reset_parameters() of the model")
    finally:
        for m, attr, _ in wrapped:
            m.__dict__.pop(attr, None)
    ref = {} if reference is None else {n: t.detach() for n, t in [*reference.named_parameters(remove_duplicate=False),
                                                                    *reference.named_buffers(remove_duplicate=False)]}
    return Coverage(type(net).__name__, tuple(path), _rows(net, mode, source_groups, ties, ref), materialize_with)


def _rows(net: nn.Module, mode: _Writes, source_groups, ties, ref: dict[str, Tensor]) -> tuple[TensorCoverage, ...]:
    groups, key_of = _tensor_groups(net)
    tie_sets: list[set[str]] = [{n for n, *_ in members} for members in source_groups.values() if len(members) > 1]
    tie_sets += [set(g) for g in _declared_ties(net, ties) if all(n in key_of for n in g)]
    by_name = {n: x for members in groups.values() for n, _, x in members}
    rows = []
    for members in groups.values():
        names = [n for n, *_ in members]
        name, kind, t = members[0]
        partners = set().union(*[s for s in tie_sets if s & set(names)]) - set(names) if tie_sets else set()
        tie_ok = all(_same(t, by_name[p]) for p in partners)
        track = mode.tracks.get(t.untyped_storage().data_ptr())
        if track is None:  # replaced by a tensor the init path created and never wrote in place
            last = torch.full(t.shape, -2, dtype=torch.int32)
            twice = overridden = torch.zeros(t.shape, dtype=torch.bool)
        else:
            geo = (t.shape, t.stride(), t.storage_offset())
            last, twice, overridden = (x.as_strided(*geo) for x in (track.last, track.twice, track.overridden))
        writers = tuple(mode.names[mode.calls[c][0]] or "(model)" for c in torch.unique(last).tolist() if c >= 0)
        nan = int(torch.isnan(t).sum()) if t.is_floating_point() else 0
        unwritten = int((last == -1).sum()) if track is not None else (t.numel() if nan == t.numel() else 0)
        other = ref.get(name)
        rows.append(TensorCoverage(name, kind, tuple(t.shape), t.numel(), unwritten, int(twice.sum()),
                                   int(overridden.sum()), nan, writers, tuple(names[1:]) + tuple(sorted(partners)),
                                   tie_ok, _std(t), _std(other) if other is not None else math.nan,
                                   other is not None and _differs(other, t.detach())))
    return tuple(rows)


def _std(t: Tensor) -> float:
    return float(t.detach().double().std()) if t.is_floating_point() and t.numel() > 1 else math.nan


def _differs(ref: Tensor, got: Tensor) -> bool:
    """Whether ``got`` (after the init path) is drawn from another distribution than ``ref`` (the eager build).

    Constant tensors must match exactly; random ones (16 elements or more) differ when their stds
    are more than 1.5× apart or their means more than half a std; smaller random ones are not judged.
    """
    if ref.shape != got.shape or ref.dtype != got.dtype:
        return True
    if not ref.is_floating_point():
        return not torch.equal(ref, got)
    r, g = ref.double(), got.double()
    if torch.isnan(g).any() or torch.isnan(r).any():
        return False  # never written (its own status) or NaN by design
    if r.numel() < 2:
        return not torch.equal(r, g)
    sr, sg = float(r.std()), float(g.std())
    if sr == 0 or sg == 0:
        return not torch.equal(r, g)
    if r.numel() < 16:
        return False
    return max(sr / sg, sg / sr) > 1.5 or abs(float(r.mean()) - float(g.mean())) > 0.5 * sr


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a.detach(), nan=0.0),
                                                   torch.nan_to_num(b.detach(), nan=0.0)))


def model_coverage(model: str, *, dataset: str = "digits", input_shape: str | Sequence[int] | None = None,
                   classes: int = 10) -> Coverage:
    """``coverage`` of a model given as the commands take it: a zoo spec (``resnet(blocks=2)``) or
    ``module:factory``, for per-example inputs of ``input_shape`` (``"3,32,32"``) with ``classes``
    outputs, or else for ``dataset``'s examples (what ``initlab audit --coverage`` runs)."""
    classes = as_int("--classes", classes, minimum=1)
    if input_shape is not None:
        shape = tuple(parse_int_list(input_shape, "--input-shape") if isinstance(input_shape, str) else input_shape)
        if not shape or any(d <= 0 for d in shape):
            raise ValueError(f"--input-shape must be positive sizes, e.g. '3,32,32', got {input_shape!r}")
    else:
        data = load_dataset(dataset)
        shape, classes = (1, *data.image_shape), data.num_classes
    return coverage(lambda: make_model(model, shape, classes))
