"""``initlab probe``: per-layer statistics at init and after training, with the mean-field prediction."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.analysis.diagnostics import depth_profile, profile_summary
from initlab.cli.common import OUT_HELP, REPORT_HELP, console, fail, fmt, sci, split_top_level, write_html_report
from initlab.models import MAX_DEPTH, MAX_WIDTH
from initlab.plots.probe import plot_profile
from initlab.schemes import parse_scheme_list
from initlab.store import atomic_write_csv, check_out_dir, claim_out_dir, write_error
from initlab.training.loop import MAX_INT


def _pair(measured, predicted) -> str:
    if predicted is None or (isinstance(predicted, float) and math.isnan(predicted)):
        return sci(measured)
    return f"{sci(measured)} ({sci(predicted)})"


def probe_table(summary, title: str) -> Table:
    table = Table(title=escape(title))
    for col, just in (("activation", "left"), ("init", "left"), ("std first", "right"), ("std mid", "right"),
                      ("std last", "right"), ("grad first/last", "right"), ("dead", "right"), ("sat", "right"),
                      ("min distinct units", "right"), ("Jacobian σ² (decades)", "right")):
        table.add_column(col, justify=just)
    for r in summary.itertuples():
        table.add_row(Text(r.activation), Text(r.init), _pair(r.std_first, r.pred_std_first), _pair(r.std_mid, r.pred_std_mid),
                      _pair(r.std_last, r.pred_std_last), _pair(r.grad_first_over_last, r.pred_grad_first_over_last),
                      fmt(r.dead_frac, 2), fmt(r.sat_frac, 2),
                      "—" if r.distinct_min != r.distinct_min else str(int(r.distinct_min)),
                      "—" if r.jac_mean_sq != r.jac_mean_sq else f"{sci(r.jac_mean_sq)} ({r.jac_decades:.1f})")
    return table


def probe(
    activations: str = typer.Option("relu,tanh", help="Comma-separated activations for the MLP."),
    inits: str = typer.Option("zero,random,xavier,he,lecun_normal,orthogonal",
                              help="Comma-separated schemes; with --model, 'none' keeps the model's own init."),
    dataset: str = typer.Option("digits", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files; not for digits."),
    batch: int = typer.Option(512, help="Probe batch: the first BATCH training examples."),
    depth: int = typer.Option(20, help="Number of hidden layers."),
    width: int = typer.Option(256, help="Width of each hidden layer."),
    seed: int = typer.Option(0, help="Seed of the init generator."),
    model: Optional[str] = typer.Option(None, help="Probe a zoo model ('resnet(blocks=20,norm=none)', see `initlab models`) "
                                                   "or your own 'module:factory' (gets in_shape/num_classes if it asks)."),
    out: str = typer.Option("runs/probe", help="Output folder for probe.csv, summary.csv and plots. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier probe result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
):
    """See why: per-layer activation std and gradient norms at init, measured (and predicted by mean-field theory)."""

    try:
        if not 0 < depth <= MAX_DEPTH:
            raise ValueError(f"--depth must be a positive integer up to {MAX_DEPTH}, got {depth}")
        if not 0 < width <= MAX_WIDTH:
            raise ValueError(f"--width must be a positive integer up to {MAX_WIDTH}, got {width}")
        if not 0 <= seed <= MAX_INT:
            raise ValueError(f"--seed must be an integer from 0 to {MAX_INT}, got {seed}")
        if model is not None and activations != "relu,tanh":
            raise ValueError("--activations has no effect with --model (the model has its own); drop one of them")
        if data_dir is not None and dataset == "digits":
            raise ValueError("--data-dir has no effect with dataset 'digits' (bundled); drop it or choose mnist or fashion-mnist")
        init_list = parse_scheme_list(inits, allow={"none"} if model is not None else ())
        check_out_dir(out, "probe", overwrite=overwrite)
        with console.status("probing…"):
            frame = depth_profile(split_top_level(activations, "--activations"), init_list, dataset=dataset,
                                  data_dir=None if data_dir is None else str(data_dir), depth=depth, width=width,
                                  batch=batch, seed=seed, model=model)
        summary = profile_summary(frame)
        out_dir = claim_out_dir(out, "probe", overwrite=overwrite)
        arch = f"model {model}" if model else f"{depth}×{width} MLP"
        title = f"{dataset}, {arch}, batch {batch}: at init, measured (mean-field prediction)"
        console.print(probe_table(summary, title))
        atomic_write_csv(out_dir / "probe.csv", frame.drop(columns=["hist_counts", "hist_edges"], errors="ignore"))
        atomic_write_csv(out_dir / "summary.csv", summary)
        paths = plot_profile(frame, out_dir, f"{dataset}, {arch}")
    except ValueError as e:  # includes DataError
        fail(str(e))
    except OSError as e:
        fail(str(write_error(e)))
    console.print(Text(f"std: std of the first/middle/last weight layer's output; grad first/last: gradient norm at "
                       f"the first layer over the logits'. wrote {out_dir}/: probe.csv summary.csv "
                       + " ".join(p.name for p in paths)))
    write_html_report(report_html, out_dir)
