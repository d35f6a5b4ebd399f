"""``audit`` as a command runs it: a model from its spec, checked against the data, audited, written.

``audit_model`` builds a zoo spec or ``module:factory`` for an input shape, after checking on the
``meta`` device (zoo) or by arithmetic (MLP) that it fits in free memory; ``run_audit`` adds the
example batch (the dataset's first examples, or N(0, 1) inputs of a given shape), the one
user-model check (:func:`initlab.models.check_model`), the audit and the result folder
(summary.csv, audit.csv, plots), every user error a one-line ValueError before anything is written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from initlab import store
from initlab.analysis.audit import DEFAULT_CANDIDATES as audit_defaults
from initlab.analysis.audit import AuditReport, audit, check_mlp_memory, plot_audit
from initlab.core.checks import MAX_INT, as_int
from initlab.data import load_dataset
from initlab.models import (
    MAX_DEPTH,
    MAX_WIDTH,
    check_activation,
    check_inputs,
    check_widths,
    make_model,
    mlp,
    parse_hidden,
    parse_int_list,
    resolve_model,
)
from initlab.schemes import parse_scheme, parse_scheme_list
from initlab.training.memory import available_bytes, format_bytes, module_footprint

DEFAULT_CANDIDATES = ",".join(audit_defaults)  # the command line's spelling of analysis.audit's candidates


@dataclass
class AuditRun:
    """What ``run_audit`` did: the report, the model's name, the example batch size, the folder and its files."""
    report: AuditReport
    name: str
    batch: int
    out: Path
    files: list[Path] = field(default_factory=list)


def _zoo_model(spec: str, in_shape, num_classes: int, batch: int):
    """A zoo model other than ``mlp`` for inputs of ``in_shape`` ((C, H, W)), after checking on the
    ``meta`` device that it and ``batch`` examples' activations fit in free memory."""
    resolve_model(spec)  # unknown model or parameter: its own one-line error
    build = lambda: make_model(spec, in_shape, num_classes)  # noqa: E731
    fp = module_footprint(build, lambda m: getattr(m, "input_shape", in_shape))
    if fp is None:  # cannot fail for zoo models, whose forward is known to run
        raise ValueError(f"{spec} does not run on inputs of shape {tuple(in_shape)}")
    need = 12 * fp["params"] + 4 * fp["buffers"] + 24 * batch * fp["act"]
    free = available_bytes("cpu")
    if free is not None and need > free:
        raise ValueError(f"auditing {spec} on {batch} examples needs ~{format_bytes(need)} but the CPU has "
                         f"{format_bytes(free)} free; use a smaller model or --batch")
    return build()


def audit_model(spec: str, in_shape, num_classes: int, batch: int = 1):
    """A zoo spec (``mlp(depth=50,width=256,activation=tanh)``, ``resnet(blocks=20)``, see `initlab
    models`) or ``module:factory``, for per-example inputs of ``in_shape`` ((C, H, W) or (D,)).

    A zoo MLP is checked before it is built: integer sizes within ``MAX_DEPTH``/``MAX_WIDTH``, and
    model plus activations for ``batch`` examples within free memory (one-line ValueError).
    """
    if ":" in spec.split("(", 1)[0]:  # module:factory (a ':' inside mlp(...) is a value, not a module)
        try:
            return make_model(spec, in_shape, num_classes), spec  # gets in_shape/num_classes if it asks
        except ValueError as e:
            raise ValueError(str(e).replace("--model", "MODEL")) from None
    try:
        parsed = parse_scheme(spec)
    except ValueError as e:
        raise ValueError(str(e).replace("init scheme", "model")) from None
    if parsed.name != "mlp":
        return _zoo_model(spec, in_shape, num_classes, batch), spec
    params = dict(parsed.params)
    unknown = set(params) - {"depth", "width", "activation", "hidden"}
    if unknown:
        raise ValueError(f"mlp takes depth, width, activation or hidden, got {', '.join(sorted(unknown))}")
    if "hidden" in params and ({"depth", "width"} & set(params)):
        raise ValueError("give mlp either hidden=... or depth/width, not both")

    def size(key: str, default: int, limit: int) -> int:
        v = params.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= limit:
            raise ValueError(f"mlp {key} must be a positive integer up to {limit}, got {v!r}")
        return v

    if "hidden" in params:
        hidden = params["hidden"]
        if isinstance(hidden, str):
            hidden = parse_hidden(hidden.replace(";", ","))
        elif isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = (hidden,)
        hidden = check_widths(hidden)
    else:
        hidden = (size("width", 256, MAX_WIDTH),) * size("depth", 20, MAX_DEPTH)
    activation = check_activation(str(params.get("activation", "relu")))
    in_features = math.prod(in_shape)
    check_mlp_memory([in_features, *hidden, num_classes], batch)  # before any allocation
    return mlp(in_features, hidden, num_classes, activation), spec


def write_audit(report: AuditReport, out: str | Path, *, overwrite: bool = False) -> tuple[Path, list[Path]]:
    """Write ``report`` into the result folder ``out``: summary.csv, audit.csv and the plots."""
    out_dir = store.claim_out_dir(out, "audit", overwrite=overwrite)
    try:
        store.atomic_write_csv(out_dir / "summary.csv", report.summary())
        store.atomic_write_csv(out_dir / "audit.csv", report.profile)
        files = plot_audit(report, out_dir)
    except OSError as e:
        raise store.write_error(e) from None
    return out_dir, files


def run_audit(model: str, *, inits: str | Sequence[str] = DEFAULT_CANDIDATES, dataset: str = "digits",
              input_shape: str | Sequence[int] | None = None, classes: int = 10, batch: int = 256, seed: int = 0,
              out: str | Path = "runs/audit", overwrite: bool = False, jacobian: bool = False,
              symmetry: str = "exact", progress=None) -> AuditRun:
    """Audit the model ``model`` (zoo spec or ``module:factory``) under the candidate ``inits``.

    The example batch is the first ``batch`` training examples of ``dataset``, or, with
    ``input_shape`` (e.g. ``"3,32,32"``), ``batch`` N(0, 1) inputs of that shape for a model with
    ``classes`` outputs. Every candidate is drawn from a generator seeded with ``seed``. ``jacobian``,
    ``symmetry`` and ``progress`` are :func:`initlab.analysis.audit.audit`'s.
    """
    batch = as_int("--batch", batch, minimum=1)
    classes = as_int("--classes", classes, minimum=1)
    seed = as_int("--seed", seed, minimum=0, maximum=MAX_INT)
    candidates = parse_scheme_list(inits)
    store.check_out_dir(out, "audit", overwrite=overwrite)
    gen = torch.Generator().manual_seed(seed)
    if input_shape is not None:
        shape = parse_int_list(input_shape, "--input-shape") if isinstance(input_shape, str) else tuple(input_shape)
        if any(d <= 0 for d in shape) or math.prod(shape) * batch > 1 << 28:
            raise ValueError(f"--input-shape must be positive sizes with batch × size ≤ 2^28, got {input_shape!r}")
        net, name = audit_model(model, tuple(shape), classes, batch)
        x = torch.randn(batch, *shape, generator=gen)
        if x.dim() > 2 and not any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))
                                   for m in net.modules()):
            x = x.reshape(batch, -1)
    else:
        data = load_dataset(dataset)
        batch = min(batch, len(data.x_train))  # the example batch is at most the training set
        net, name = audit_model(model, (1, *data.image_shape), data.num_classes, batch)
        x = check_inputs(net, data.x_train[:batch], data.image_shape, what=f"model {name}")
    report = audit(net, x, candidates, seed=seed, name=name, jacobian=jacobian, symmetry=symmetry, progress=progress)
    out_dir, files = write_audit(report, out, overwrite=overwrite)
    return AuditRun(report, name, batch, out_dir, files)
