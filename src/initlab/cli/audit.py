"""``initlab audit``: every candidate scheme's signal profile on one model, and a recommendation."""
from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.analysis.audit_run import DEFAULT_CANDIDATES, run_audit
from initlab.analysis.coverage import Coverage, model_coverage
from initlab.cli.common import OUT_HELP, REPORT_HELP, console, fail, one_line, sci, write_html_report


def audit(
    model: str = typer.Argument(..., help="A zoo model ('mlp(depth=50,width=256,activation=tanh)', "
                                          "'resnet(blocks=20,norm=none)', see `initlab models`), a library model "
                                          "('timm:resnet50', 'torchvision:mobilenet_v2', 'hf:gpt2(n_layer=4)') or your own 'module:factory'."),
    inits: str = typer.Option(DEFAULT_CANDIDATES, help="Candidate schemes, comma-separated."),
    dataset: str = typer.Option("digits", help="Example batch from digits | mnist | fashion-mnist (ignored with --input-shape)."),
    input_shape: Optional[str] = typer.Option(None, help="Example batch of N(0,1) inputs of this shape per example, e.g. '3,32,32'."),
    classes: int = typer.Option(10, help="Output classes of a zoo model with --input-shape."),
    batch: int = typer.Option(256, help="Examples in the example batch."),
    seed: int = typer.Option(0, help="Seed of every candidate's init (the same draws for each)."),
    out: str = typer.Option("runs/audit", help="Output folder: audit.csv, summary.csv, plots. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier audit result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
    jacobian: bool = typer.Option(False, help="Also take each candidate's input-output Jacobian spectrum (slow on large convnets)."),
    symmetry: str = typer.Option("exact", help="Unit symmetry check: exact (bit-equal units, fast) | full (with tolerance and "
                                               "max cosine: units² distances per layer) | none."),
    coverage: bool = typer.Option(False, "--coverage", help="Instead: run the model's own init (reset_parameters, "
                                  "init_weights) on fresh storage and list tensors it never writes, writes twice, unties or draws otherwise "
                                  "than the eager build (exit status 1 when it finds any)."),
):
    """How would each init treat this model? Forward and backward signal per layer, flags and a recommendation."""
    if coverage:
        try:
            with console.status(escape(f"running the own init of {model}…")):
                result = model_coverage(model, dataset=dataset, input_shape=input_shape, classes=classes)
        except ValueError as e:
            fail(str(e))
        _print_coverage(result)
        raise typer.Exit(1 if result.faults else 0)
    try:
        with console.status(escape(f"auditing {model}…")) as status:
            def progress(done: int, total: int, scheme: str) -> None:
                if done < total:
                    status.update(escape(f"auditing {model}: candidate {done + 1}/{total}, {scheme}…"))

            run = run_audit(model, inits=inits, dataset=dataset, input_shape=input_shape, classes=classes, batch=batch,
                            seed=seed, out=out, overwrite=overwrite, jacobian=jacobian, symmetry=symmetry,
                            progress=progress)
    except ValueError as e:  # includes DataError
        fail(str(e))
    report, name, batch, out_dir = run.report, run.name, run.batch, run.out
    table = Table(title=escape(f"{name}: signal at init, example batch of {batch}"),
                  caption=escape("forward: RMS of the last hidden representation over the first (healthy 0.5–2); "
                                 "gradient: first/last hidden weight-gradient norm (healthy 0.1–10); logit std at init (healthy ≤ 3); "
                                 "Jacobian (with --jacobian): "
                                 "mean squared singular value of d logits / d input (decades spanned by the middle 90%)"))
    for col, just in (("scheme", "left"), ("forward", "right"), ("gradient", "right"), ("logit std", "right"),
                      ("Jacobian σ² (decades)", "right"), ("seconds", "right"), ("flags", "left")):
        table.add_column(col, justify=just)
    for r in report.summary().itertuples():
        jac = "—" if r.jac_mean_sq != r.jac_mean_sq else f"{sci(r.jac_mean_sq)} ({r.jac_decades:.1f})"
        table.add_row(Text(r.scheme + (" *" if r.recommended else "")), sci(r.forward_ratio), sci(r.grad_ratio),
                      sci(r.logit_std), jac, "—" if r.seconds != r.seconds else f"{r.seconds:.1f}",
                      Text(r.flags or "healthy", style="green" if not r.flags else "yellow"))
    console.print(table)
    console.print(Text(f"recommended: {report.recommended}: {report.reason}"))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))
    console.print(Text(f"wrote {one_line(str(out_dir))}/: summary.csv audit.csv " + " ".join(p.name for p in run.files)))
    write_html_report(report_html, out_dir)


def _print_coverage(result: Coverage) -> None:
    """The rows with a fault, then the one-line summary."""
    rows = result.faults
    table = Table(title=escape(f"{result.model}: its own init on fresh storage"),
                  caption=escape("unwritten: elements no init call wrote; twice: elements a later call overwrote "
                                 "(not a later phase, an enclosing module or a co-owner of a tied tensor); std: after "
                                 "the init path (of the model built eagerly)"))
    for col, just in (("tensor", "left"), ("shape", "right"), ("unwritten", "right"), ("twice", "right"),
                      ("std (eager)", "right"), ("written by", "left"), ("tied with", "left"), ("status", "left")):
        table.add_column(col, justify=just)
    for t in rows:
        table.add_row(Text(t.tensor), "×".join(map(str, t.shape)) or "scalar", str(t.unwritten), str(t.twice),
                      f"{sci(t.std)} ({sci(t.eager_std)})", Text(", ".join(t.writers) or "—"), Text(", ".join(t.tied_with)),
                      Text(t.status, style="green" if t.status == "ok" else "red"))
    if rows:
        console.print(table)
    console.print(Text(result.summary()), soft_wrap=True)
