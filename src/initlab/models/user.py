"""The user's own models: ``module:factory`` specs, factories called per run, outputs checked.

``load_factory`` resolves ``"package.module:factory"`` (working directory first, never shadowing an
installed package); :func:`call_factory` calls it with the arguments it asks for (``in_shape`` /
``num_classes``, or ``in_features`` / ``out_features``); :func:`input_shape_of` says which layout
a model wants; :func:`check_output` runs it once on the dataset's input and turns every way it can
be unusable (raises, a tuple, a dict without logits, the wrong shape) into one line, and
:func:`pick_logits` makes a model returning ``{"logits": ...}`` or an object with ``.logits``
return the tensor (a forward hook, so parameter names stay the user's).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

_MODULE_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
# Top-level module name -> file that load_factory loaded from a working directory.
_CWD_MODULES: dict[str, str] = {}
# The working directory load_factory last appended to sys.path (replaced when it changes).
_APPENDED_PATH: list[str] = []


def _same_path(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, TypeError, ValueError):
        return False


def _cwd_module_file(top: str, cwd: str) -> str | None:
    """``cwd/top/__init__.py`` or ``cwd/top.py`` (a package wins, as in Python's own finder), or None."""
    for candidate in (os.path.join(cwd, top, "__init__.py"), os.path.join(cwd, f"{top}.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _elsewhere(top: str, cwd_file: str, cwd: str) -> str | None:
    """Where ``top`` is already imported or installed, ignoring the working directory, or None."""
    loaded = sys.modules.get(top)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        return None if where and _same_path(where, cwd_file) else (where or f"the already imported module {top!r}")
    if top in sys.builtin_module_names:
        return f"the built-in module {top!r}"
    paths = [p for p in sys.path if isinstance(p, str) and not _same_path(p or os.curdir, cwd)]
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(top, paths if finder is importlib.machinery.PathFinder else None)
        except Exception:  # a third-party finder failing is not our user's problem
            continue
        if spec is None:
            continue
        where = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
        if (where and _same_path(where, cwd_file)) or any(_same_path(loc, os.path.dirname(cwd_file)) for loc in locations):
            continue  # a finder that looked in the working directory found the user's own file
        return where or (locations[0] if locations else f"the installed module {top!r}")
    return None


def _import_user_module(mod_name: str):
    top = mod_name.partition(".")[0]
    cwd = os.getcwd()
    # The user module's own sibling imports (`import helpers`) need the working directory on the
    # path; appended, so installed packages always come first (a stray ./torch.py shadows nothing).
    # A previous working directory that we appended goes, so its files are not found from here.
    for old in [p for p in _APPENDED_PATH if p != cwd]:
        _APPENDED_PATH.remove(old)
        if old in sys.path:
            sys.path.remove(old)
    if not any(isinstance(p, str) and _same_path(p or os.curdir, cwd) for p in sys.path):
        sys.path.append(cwd)
        _APPENDED_PATH.append(cwd)
    file = _cwd_module_file(top, cwd)
    if file is None:
        return importlib.import_module(mod_name)
    loaded = sys.modules.get(top)
    if loaded is not None and top in _CWD_MODULES and not _same_path(_CWD_MODULES[top], file):
        # Ours, loaded from another working directory: forget it (and its submodules) and reload.
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
        del _CWD_MODULES[top]
        loaded = None
    other = _elsewhere(top, file, cwd)
    if other is not None:
        raise ValueError(
            f"--model module {top!r} is both {file} in the working directory and {other}; "
            f"rename your {os.path.relpath(file, cwd)} (installed and imported modules are never shadowed)"
        )
    if loaded is None:
        is_pkg = os.path.basename(file) == "__init__.py"
        spec = importlib.util.spec_from_file_location(
            top, file, submodule_search_locations=[os.path.dirname(file)] if is_pkg else None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(top, None)
            raise
        _CWD_MODULES[top] = file
    return importlib.import_module(mod_name)


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """Resolve ``"package.module:factory"`` to a zero-argument callable.

    The module is looked up like ``python -m`` would, in the working directory first
    (``./module.py`` or ``./package/__init__.py``), then as an installed module, but without
    putting the working directory at the front of ``sys.path``: the user's module is loaded from its
    file and registered under its own name only, and the working directory is *appended* to
    ``sys.path`` for its sibling imports. So a stray ``./sklearn.py`` or ``./torch.py`` never
    shadows the installed package for the rest of the process. If the module's top-level name is
    both a file in the working directory and an installed (or already imported) module, e.g.
    ``--model sklearn:make`` next to ``./sklearn.py``, neither is guessed: ValueError asks to rename
    the file. Modules loaded once are cached in ``sys.modules`` (a same-named module from another
    working directory is reloaded).
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"--model must look like 'module:factory', got {spec!r}")
    mod_name, attr = (part.strip() for part in spec.split(":"))
    if not _MODULE_RE.fullmatch(mod_name) or not attr.isidentifier():
        raise ValueError(f"--model must look like 'module:factory' with Python names, got {spec!r}")
    try:
        module = _import_user_module(mod_name)
    except ValueError as e:
        if "--model" in str(e):
            raise
        raise ValueError(f"cannot import module {mod_name!r} for --model: ValueError: {e}") from None
    except (Exception, SystemExit) as e:  # ImportError, or the module raising (or exiting) on import
        raise ValueError(f"cannot import module {mod_name!r} for --model: {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"module {mod_name!r} has no callable {attr!r} for --model")
    return factory


def build_user_model(spec: str) -> nn.Module:
    """Call the factory named by ``spec`` with no arguments; it must return an ``nn.Module``."""
    try:
        model = load_factory(spec)()
    except ValueError as e:
        if "--model" in str(e):
            raise
        raise ValueError(f"--model factory {spec!r} raised ValueError: {e}") from None
    except (Exception, SystemExit) as e:
        raise ValueError(f"--model factory {spec!r} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model factory {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def call_factory(factory: Callable[..., nn.Module], in_shape: Sequence[int], num_classes: int,
                 what: str = "--model factory") -> nn.Module:
    """``factory(...)`` with the sizes it declares: ``in_shape`` (the image's (C, H, W)) and/or
    ``num_classes``, or ``in_features`` (C·H·W) and/or ``out_features``; none if it declares none.

    Anything it raises becomes a one-line ValueError; it must return an ``nn.Module``.
    """
    kwargs = factory_kwargs(factory, in_shape, num_classes)
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as e:
        raise ValueError(f"{what} {_name(factory)} raised {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what} {_name(factory)} returned {type(model).__name__}, not an nn.Module")
    return model


def factory_kwargs(factory: Callable, in_shape: Sequence[int], num_classes: int) -> dict:
    """The keyword arguments :func:`call_factory` passes to ``factory``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    offered = {"in_shape": tuple(in_shape), "num_classes": int(num_classes),
               "in_features": int(math.prod(in_shape)), "out_features": int(num_classes)}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: v for k, v in offered.items() if k in params and params[k].kind in kinds}


def _name(factory: Callable) -> str:
    mod, qual = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    return f"'{mod}:{qual}'" if mod and qual else repr(factory)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Bilinear)


def input_shape_of(model: nn.Module, image_shape: Sequence[int]) -> tuple[int, ...]:
    """The per-example input shape ``model`` wants for images of ``image_shape`` ((H, W) or (C, H, W)).

    A model's ``input_shape`` attribute wins (every zoo model has one); otherwise a model whose
    first weight layer is a Conv2d gets images (C, H, W), anything else flat vectors (C·H·W,).
    """
    declared = getattr(model, "input_shape", None)
    if declared is not None:
        try:
            return tuple(int(s) for s in declared)
        except (TypeError, ValueError):
            raise ValueError(f"model.input_shape must be a sequence of integers, got {declared!r}") from None
    image = tuple(int(s) for s in image_shape)
    if len(image) == 2:
        image = (1, *image)
    first = next((m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)), None)
    return image if isinstance(first, nn.Conv2d) else (math.prod(image),)


def model_inputs(model: nn.Module, x: torch.Tensor, image_shape: Sequence[int], what: str = "model") -> torch.Tensor:
    """``x`` (flattened examples) viewed as the layout ``model`` wants (:func:`input_shape_of`); a one-line
    ValueError when the model declares an input shape the data cannot take (built for another input size)."""
    shape = input_shape_of(model, image_shape)
    if math.prod(shape) != math.prod(x.shape[1:]):
        raise ValueError(f"{what} wants inputs of shape {shape} ({math.prod(shape)} values per example) but the "
                         f"dataset's examples have {math.prod(x.shape[1:])} values (images {tuple(image_shape)}); "
                         "build it for this dataset's input size")
    return x.reshape(x.shape[0], *shape)


def check_inputs(model: nn.Module, x: torch.Tensor, image_shape: Sequence[int], what: str = "model") -> torch.Tensor:
    """The data side of the user-model check: the input layout the model wants fits the data
    (:func:`model_inputs`), and the model does not take integer token ids (an ``nn.Embedding`` as its
    first layer: initlab's datasets are images of floats) unless it declares the images it takes
    (``input_shape``: an adapter such as :class:`initlab.models.external.ImageTokens` makes the tokens). Returns ``x`` in the model's layout."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag, *_WEIGHT_LAYERS))), None)
    if isinstance(first, (nn.Embedding, nn.EmbeddingBag)) and getattr(model, "input_shape", None) is None:
        raise ValueError(f"{what} takes integer token ids (its first layer is an {type(first).__name__}); initlab's "
                         "datasets are images of floats: give a model whose first layer takes them")
    return model_inputs(model, x, image_shape, what)


def check_model(model: nn.Module, x: torch.Tensor, image_shape: Sequence[int], num_classes: int,
                what: str = "model") -> torch.Tensor:
    """The one check of a model against a dataset, shared by compare, probe and sweep (audit uses its
    data side, :func:`check_inputs`, and reads any output itself, tuples included).

    ``x``: a few flattened examples. Each failure is a one-line ValueError: :func:`check_inputs`, then
    one forward that must return floating-point logits of shape (batch, num_classes)
    (:func:`check_output`). Returns ``x`` in the model's layout.
    """
    inputs = check_inputs(model, x, image_shape, what)
    check_output(model, inputs, num_classes, what)
    return inputs


def _logits_from(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def _pick_logits_hook(module, inputs, output):
    logits = _logits_from(output)
    return output if logits is None else logits


def pick_logits(model: nn.Module) -> nn.Module:
    """Make ``model`` return its logits tensor when its forward returns ``{"logits": t}`` or an
    object with a ``.logits`` tensor (Hugging Face style); a plain tensor output is unchanged.

    A forward hook does it, so the model's parameter names (and rules naming them) stay as they are.
    """
    model.register_forward_hook(_pick_logits_hook)
    return model


def describe_output(output) -> str:
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        return f"a dict with keys {sorted(map(str, output))[:6]}"
    return f"a {type(output).__name__}"


@torch.no_grad()
def check_output(model: nn.Module, x: torch.Tensor, num_classes: int, what: str = "model") -> None:
    """Run ``model`` once (eval mode, no gradients) on the batch ``x``; one-line ValueError unless it
    returns logits of shape (batch, num_classes): a tensor, or a dict/object holding ``logits``.

    Call it on a throwaway instance: the forward runs in eval mode so BatchNorm statistics are not
    touched, and the model's mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        output = model(x)
    except (Exception, SystemExit) as e:
        raise ValueError(f"{what} fails on the dataset's input (a batch of shape {tuple(x.shape)}): "
                         f"{type(e).__name__}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    logits = _logits_from(output)
    if logits is None:
        if isinstance(output, (tuple, list)):
            raise ValueError(f"{what} returns a {type(output).__name__} of {len(output)} items; return the logits "
                             "tensor, or a dict with key 'logits'")
        raise ValueError(f"{what} returns {describe_output(output)}; return the logits tensor of shape "
                         f"(batch, {num_classes}), or a dict with key 'logits'")
    want = (x.shape[0], num_classes)
    if tuple(logits.shape) != want:
        raise ValueError(f"{what} returns logits of shape {tuple(logits.shape)} for a batch of {x.shape[0]}; expected "
                         f"{want} (batch, classes of the dataset)")
    if not logits.is_floating_point():
        raise ValueError(f"{what} returns {logits.dtype} logits; expected floating point")
