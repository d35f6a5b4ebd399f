"""``initlab probe``: per-layer statistics at init and after training, with the mean-field prediction."""
from __future__ import annotations

from typer import Option

from initlab.analysis.probe_run import DEFAULT_ACTIVATIONS, DEFAULT_INITS, run_probe
from initlab.cli.common import DataDir, Dataset, Overwrite, Report, call, console, out_option, say, show, write_html_report
from initlab.report.tables import probe_summary


def probe(
    activations: str = Option(DEFAULT_ACTIVATIONS, help="Comma-separated activations for the MLP."),
    inits: str = Option(DEFAULT_INITS, help="Comma-separated schemes; with --model, 'none' keeps the model's own init."),
    dataset: Dataset = "digits", data_dir: DataDir = None,
    batch: int = Option(512, help="Probe batch: the first BATCH training examples."),
    depth: int = Option(20, help="Number of hidden layers."), width: int = Option(256, help="Width of each hidden layer."),
    seed: int = Option(0, help="Seed of the init generator."),
    model: str | None = Option(None, help="Probe a zoo model ('resnet(blocks=20,norm=none)', see `initlab models`) or "
                               "your own 'module:factory' (gets in_shape/num_classes if it asks)."),
    out: out_option("Output folder for probe.csv, summary.csv and plots.") = "runs/probe",
    overwrite: Overwrite = False, report_html: Report = False,
):
    """See why: per-layer activation std and gradient norms at init, measured (and predicted by mean-field theory)."""
    with console.status("probing…"):
        run = call(run_probe, locals())
    show(probe_summary(run.summary, run.title))
    say(f"std: std of the first/middle/last weight layer's output; grad first/last: gradient norm at the first layer "
        f"over the logits'. wrote {run.out}/: probe.csv summary.csv " + " ".join(p.name for p in run.files))
    write_html_report(report_html, run.out)
