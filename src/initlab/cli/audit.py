"""``initlab audit``: every candidate scheme's signal profile on one model, and a recommendation."""
from __future__ import annotations

import math
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.cli.common import (sci, OUT_HELP, REPORT_HELP, check_positive,
                                console, fail, write_html_report)


def build_zoo_audit_model(spec: str, in_shape, num_classes: int, batch: int):
    """A zoo model other than ``mlp`` for inputs of ``in_shape`` ((C, H, W)), after checking on the
    ``meta`` device that it and ``batch`` examples' activations fit in free memory."""
    from initlab.training.memory import available_bytes, format_bytes, module_footprint
    from initlab.models import make_model, resolve_model

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


def build_audit_model(spec: str, in_shape, num_classes: int, batch: int = 1):
    """A zoo spec (``mlp(depth=50,width=256,activation=tanh)``, ``resnet(blocks=20)``, see `initlab
    models`) or ``module:factory``, for per-example inputs of ``in_shape`` ((C, H, W) or (D,)).

    A zoo MLP is checked before it is built: integer sizes within ``MAX_DEPTH``/``MAX_WIDTH``, and
    model plus activations for ``batch`` examples within free memory (one-line ValueError).
    """
    from initlab.analysis.audit import check_mlp_memory
    from initlab.analysis.diagnostics import build_user_model
    from initlab.models import MAX_DEPTH, MAX_WIDTH, check_activation, check_widths, mlp, parse_hidden
    from initlab.schemes import parse_scheme

    if ":" in spec.split("(", 1)[0]:  # module:factory (a ':' inside mlp(...) is a value, not a module)
        try:
            return build_user_model(spec), spec
        except ValueError as e:
            raise ValueError(str(e).replace("--model", "MODEL")) from None
    try:
        parsed = parse_scheme(spec)
    except ValueError as e:
        raise ValueError(str(e).replace("init scheme", "model")) from None
    if parsed.name != "mlp":
        return build_zoo_audit_model(spec, in_shape, num_classes, batch), spec
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


def audit(
    model: str = typer.Argument(..., help="A zoo model ('mlp(depth=50,width=256,activation=tanh)', "
                                          "'resnet(blocks=20,norm=none)', see `initlab models`) or your own 'module:factory'."),
    inits: str = typer.Option("auto,he,xavier,pytorch_default", help="Candidate schemes, comma-separated."),
    dataset: str = typer.Option("digits", help="Example batch from digits | mnist | fashion-mnist (ignored with --input-shape)."),
    input_shape: Optional[str] = typer.Option(None, help="Example batch of N(0,1) inputs of this shape per example, e.g. '3,32,32'."),
    classes: int = typer.Option(10, help="Output classes of a zoo model with --input-shape."),
    batch: int = typer.Option(256, help="Examples in the example batch."),
    seed: int = typer.Option(0, help="Seed of every candidate's init (the same draws for each)."),
    out: str = typer.Option("runs/audit", help="Output folder: audit.csv, summary.csv, plots. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier audit result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
):
    """How would each init treat this model? Forward and backward signal per layer, flags and a recommendation."""
    import torch

    from initlab.analysis.audit import audit as run_audit
    from initlab.analysis.audit import plot_audit
    from initlab.data import load_dataset
    from initlab.analysis.diagnostics import model_inputs
    from initlab.models import parse_int_list
    from initlab.schemes import parse_scheme_list
    from initlab.store import atomic_write_csv, check_out_dir, claim_out_dir
    from initlab.training.loop import MAX_INT

    try:
        check_positive(batch=batch, classes=classes)
        if not 0 <= seed <= MAX_INT:
            raise ValueError(f"--seed must be an integer from 0 to {MAX_INT}, got {seed}")
        candidates = parse_scheme_list(inits)
        check_out_dir(out, "audit", overwrite=overwrite)
        gen = torch.Generator().manual_seed(seed)
        if input_shape is not None:
            shape = parse_int_list(input_shape, "--input-shape")
            if any(d <= 0 for d in shape) or math.prod(shape) * batch > 1 << 28:
                raise ValueError(f"--input-shape must be positive sizes with batch × size ≤ 2^28, got {input_shape!r}")
            net, name = build_audit_model(model, tuple(shape), classes, batch)
            x = torch.randn(batch, *shape, generator=gen)
            if x.dim() > 2 and not any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))
                                       for m in net.modules()):
                x = x.reshape(batch, -1)
        else:
            data = load_dataset(dataset)
            batch = min(batch, len(data.x_train))  # the example batch is at most the training set
            net, name = build_audit_model(model, (1, *data.image_shape), data.num_classes, batch)
            x = model_inputs(net, data.x_train[:batch], data.image_shape)
        with console.status(escape(f"auditing {name} under {len(candidates)} schemes…")):
            report = run_audit(net, x, candidates, seed=seed, name=name)
        out_dir = claim_out_dir(out, "audit", overwrite=overwrite)
        atomic_write_csv(out_dir / "summary.csv", report.summary())
        atomic_write_csv(out_dir / "audit.csv", report.profile)
        paths = plot_audit(report, out_dir)
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        from initlab.store import write_error

        fail(str(write_error(e)))
    table = Table(title=escape(f"{name}: signal at init, example batch of {batch}"),
                  caption=escape("forward: RMS of the last hidden representation over the first (healthy 0.5–2); "
                                 "gradient: first/last hidden weight-gradient norm (healthy 0.1–10); Jacobian: "
                                 "mean squared singular value of d logits / d input (decades spanned by the middle 90%)"))
    for col, just in (("scheme", "left"), ("forward", "right"), ("gradient", "right"), ("Jacobian σ² (decades)", "right"),
                      ("flags", "left")):
        table.add_column(col, justify=just)
    for r in report.summary().itertuples():
        jac = "—" if r.jac_mean_sq != r.jac_mean_sq else f"{sci(r.jac_mean_sq)} ({r.jac_decades:.1f})"
        table.add_row(Text(r.scheme + (" *" if r.recommended else "")), sci(r.forward_ratio), sci(r.grad_ratio),
                      jac, Text(r.flags or "healthy", style="green" if not r.flags else "yellow"))
    console.print(table)
    console.print(Text(f"recommended: {report.recommended}: {report.reason}"))
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(out_dir))  # rich drops control chars
    console.print(Text(f"wrote {shown}/: summary.csv audit.csv " + " ".join(p.name for p in paths)))
    write_html_report(report_html, out_dir)
