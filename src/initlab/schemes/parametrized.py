"""Effective tensors of a module: plain parameters and weights computed from others.

A layer's "weight" is not always a parameter. ``torch.nn.utils.parametrize`` (and with it
``parametrizations.weight_norm`` / ``spectral_norm``) computes it from ``parametrizations.weight.original*``;
the old hook-based ``torch.nn.utils.weight_norm`` from ``weight_g`` / ``weight_v`` and the old
``torch.nn.utils.spectral_norm`` from ``weight_orig``. ``module_slots`` lists every tensor a
module computes with under the name its forward uses (``weight``), ``Slot.read`` returns the
effective value without side effects, and ``Slot.write`` stores a new effective value the way
the parametrization allows:

* a parametrization list: its ``right_inverse`` chain, like ``module.weight = value`` (a
  parametrization without ``right_inverse`` counts as the identity, as ``register_parametrization``
  assumes at registration). weight_norm inverts exactly: ``g = ‖value‖`` per output, ``v = value``.
  spectral_norm's ``right_inverse`` is the identity, so ``original = value`` and the effective
  weight is ``value / σ(value)``: its spectral norm is 1 whatever the scheme's scale. The power
  iteration's vectors ``u``, ``v`` are set to the top singular pair of ``value`` (an SVD, no
  randomness), so σ is exact now and the next training-mode power step starts at its fixed point;
* old weight_norm: ``weight_v = value``, ``weight_g = ‖value‖`` per ``dim``: exact;
* old spectral_norm: ``weight_orig = value`` and ``weight_u``, ``weight_v`` as above.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Iterator

import torch

# the modules, not the functions torch.nn.utils re-exports under the same names
import torch.nn.utils.spectral_norm  # noqa: F401  (registers the module in sys.modules)
import torch.nn.utils.weight_norm  # noqa: F401
from torch import Tensor, nn
from torch.nn.utils import parametrize

_OldWeightNorm = sys.modules["torch.nn.utils.weight_norm"].WeightNorm
_OldSpectralNorm = sys.modules["torch.nn.utils.spectral_norm"].SpectralNorm
SPECTRAL_NOTE = "spectral_norm: effective weight = draw / σ(draw)"


def _top_singular_pair(weight_mat: Tensor, u: Tensor, v: Tensor) -> None:
    """Set spectral_norm's power-iteration vectors to the exact top singular pair (σ = uᵀWv)."""
    left, _, right_h = torch.linalg.svd(weight_mat.detach().double(), full_matrices=False)
    u.copy_(left[:, 0])
    v.copy_(right_h[0])


@dataclass(frozen=True, eq=False)
class Slot:
    """One tensor a module computes with, under the attribute name its forward reads."""

    module: nn.Module
    name: str  # "weight", "in_proj_weight", "weight_ih_l0", ...
    kind: str  # "parameter" | "parametrize" | "weight_norm (old)" | "spectral_norm (old)"
    params: tuple[nn.Parameter, ...]  # the parameters that hold it
    hook: object = None  # the old-style WeightNorm / SpectralNorm hook

    @property
    def shape(self) -> torch.Size:
        """Shape of the effective tensor."""
        return self.read().shape if self.kind != "parameter" else self.params[0].shape

    def describe(self) -> str:
        """``parametrize(_WeightNorm)`` and the like; "" for a plain parameter."""
        if self.kind == "parametrize":
            names = ", ".join(type(m).__name__ for m in self.module.parametrizations[self.name])
            return f"parametrize({names})"
        return "" if self.kind == "parameter" else self.kind

    def read(self) -> Tensor:
        """The effective value, detached and cloned; reading has no side effects."""
        with torch.no_grad():
            if self.kind == "parameter":
                return self.params[0].detach().clone()
            if self.kind == "parametrize":
                with _eval(self.module.parametrizations[self.name]):  # no power iteration on read
                    return getattr(self.module, self.name).detach().clone()
            if self.kind == "weight_norm (old)":
                return self.hook.compute_weight(self.module).detach().clone()
            return self.hook.compute_weight(self.module, do_power_iteration=False).detach().clone()

    def write(self, value: Tensor) -> str:
        """Store ``value`` as the effective tensor; return a note when the result is not ``value``."""
        with torch.no_grad():
            if self.kind == "parameter":
                self.params[0].copy_(value)
                return ""
            if self.kind == "parametrize":
                return _write_parametrized(self.module, self.name, value)
            if self.kind == "weight_norm (old)":
                g, v = self.params
                v.copy_(value)
                g.copy_(torch.norm_except_dim(value, 2, self.hook.dim))
                setattr(self.module, self.name, self.hook.compute_weight(self.module))
                return ""
            (orig,) = self.params
            orig.copy_(value)
            u, v = getattr(self.module, self.name + "_u"), getattr(self.module, self.name + "_v")
            _top_singular_pair(self.hook.reshape_weight_to_matrix(orig), u, v)
            setattr(self.module, self.name, self.hook.compute_weight(self.module, do_power_iteration=False))
            return SPECTRAL_NOTE


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _write_parametrized(module: nn.Module, name: str, value: Tensor) -> str:
    plist = module.parametrizations[name]
    new, assumed = value, []
    for p in reversed(plist):  # what ParametrizationList.right_inverse does, minus its refusal
        if hasattr(p, "right_inverse"):
            try:
                new = p.right_inverse(new)
                continue
            except NotImplementedError:
                pass
        assumed.append(type(p).__name__)  # identity, as register_parametrization assumes
    originals = [plist.original] if plist.is_tensor else [getattr(plist, f"original{i}") for i in range(plist.ntensors)]
    news = [new] if plist.is_tensor else list(new)
    for orig, val in zip(originals, news):
        if orig.shape != val.shape:
            raise ValueError(
                f"cannot write {name!r} through its parametrization: right_inverse gives shape "
                f"{tuple(val.shape)} for an original of shape {tuple(orig.shape)}"
            )
        orig.copy_(val)
    notes = [f"no right_inverse in {', '.join(assumed)}: assumed identity"] if assumed else []
    for p in plist:
        if hasattr(p, "_reshape_weight_to_matrix") and hasattr(p, "_u"):  # torch's _SpectralNorm
            if len(plist) == 1 and plist.is_tensor and plist.original.ndim > 1:
                _top_singular_pair(p._reshape_weight_to_matrix(plist.original), p._u, p._v)
            notes.append(SPECTRAL_NOTE)
    return "; ".join(notes)


def module_slots(module: nn.Module) -> dict[str, Slot]:
    """Every tensor ``module`` itself (not its children) computes with, by attribute name.

    Plain parameters keep their names; parametrized and old-style normalized weights appear under
    the name of the effective tensor (``weight``) and claim the parameters that hold them.
    """
    slots: dict[str, Slot] = {}
    claimed: set[str] = set()
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _OldWeightNorm):
            params = (getattr(module, hook.name + "_g"), getattr(module, hook.name + "_v"))
            slots[hook.name] = Slot(module, hook.name, "weight_norm (old)", params, hook)
            claimed |= {hook.name + "_g", hook.name + "_v"}
        elif isinstance(hook, _OldSpectralNorm):
            params = (getattr(module, hook.name + "_orig"),)
            slots[hook.name] = Slot(module, hook.name, "spectral_norm (old)", params, hook)
            claimed.add(hook.name + "_orig")
    for name, p in module._parameters.items():
        if p is not None and name not in claimed:
            slots[name] = Slot(module, name, "parameter", (p,))
    if parametrize.is_parametrized(module):
        for name, plist in module.parametrizations.items():
            slots[name] = Slot(module, name, "parametrize", tuple(plist.parameters(recurse=False)))
    return slots


def is_parametrization_list(module: nn.Module) -> bool:
    """True for the container holding ``original*``: its parameters belong to its owner's slot."""
    return isinstance(module, parametrize.ParametrizationList)
