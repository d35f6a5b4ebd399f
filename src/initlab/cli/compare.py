"""``initlab compare``: the seed's experiment done right, on any model."""
from __future__ import annotations

from rich.markup import escape
from typer import Option

from initlab.cli.common import (BatchSize, DataDir, Dataset, Device, DivergeLoss, Epochs, Inits, Lr, Momentum, Optimizer,
                                Overwrite, Report, Store, call, console, out_option, say, show, with_bars,
                                write_html_report)
from initlab.core.activations import ACTIVATIONS
from initlab.experiments.compare import plan_compare, run_compare
from initlab.experiments.options import compare_data, compare_spec, open_compare
from initlab.experiments.progress import RichReporter, interrupted_text
from initlab.experiments.sweeps.record import record_results
from initlab.report.tables import compare_summary, data_line
from initlab.store import out_path
from initlab.trackers.exports import check_trackers, export_mlflow, export_tensorboard

MODEL_HELP = ("A zoo model, e.g. 'cnn', 'resnet(blocks=20,norm=none)' (see `initlab models`), or your own "
              "'module:factory' (called per run; gets in_shape/num_classes if it asks). Default: the MLP of "
              "--hidden/--activation.")


def compare(
    inits: Inits = "zero,random,xavier,he", dataset: Dataset = "mnist", data_dir: DataDir = None, epochs: Epochs = 10,
    seeds: int = Option(1, help="Runs per init (paired: seed k gives every init the same batches)."),
    first_seed: int = Option(0, help="First run seed."),
    hidden: str | None = Option(None, help="Hidden widths, e.g. '256,256' (default 128)."),
    depth: int | None = Option(None, help="Number of hidden layers (with --width)."),
    width: int | None = Option(None, help="Width of each hidden layer (with --depth)."),
    activation: str = Option("relu", help=", ".join(ACTIVATIONS)), model: str | None = Option(None, help=MODEL_HELP),
    optimizer: Optimizer = "sgd", lr: Lr = 0.01, momentum: Momentum = 0.0, batch_size: BatchSize = 64,
    normalize: str = Option("seed", help="seed: (x-0.5)/0.5 | standardize | none"), device: Device = "auto",
    engine: str = Option("auto", help="auto: the engine measured fastest on these shapes (a few steps of each) | "
                         "batched: train groups of runs at once | single: one run at a time"),
    probe: bool = Option(True, help="Record per-layer statistics (dead units, symmetry, gradients) every epoch."),
    diverge_loss: DivergeLoss = 1000.0,
    out: out_option("Output folder for config, CSVs, summary and plots.") = "runs/compare",
    overwrite: Overwrite = False, report_html: Report = False,
    resume: bool = Option(False, help="Continue the unfinished runs of an interrupted compare in --out (same options)."),
    dry_run: bool = Option(False, help="Print the plan (runs, memory, the engine and its measured rates); train "
                           "nothing, write nothing."),
    store: Store = None,
    tensorboard: str | None = Option(None, "--tensorboard", help="Also export TensorBoard runs to this folder after "
                                     "training: one run per init and seed (DIR/<init>/seed<k>) with step/epoch scalars, "
                                     "probe statistics, init weight histograms and hparams. Needs: pip install "
                                     "'initlab[tensorboard]'."),
    mlflow: str | None = Option(None, "--mlflow", help="Also log to MLflow after training: one run per init and seed in "
                                "experiment 'initlab' with params, per-step/epoch metrics, probe statistics, status tags "
                                "and the plots/report as artifacts. URI: a folder (local SQLite store DIR/mlflow.db, "
                                "e.g. mlruns), a .db file, or a tracking URI (sqlite:///..., http://...). Needs: pip "
                                "install 'initlab[mlflow]'."),
):
    """Compare init schemes the way the seed notebook meant to: fresh model per run, paired seeds, test set."""
    spec = call(compare_spec, locals())
    if dry_run:
        with console.status(escape(f"loading {dataset}, timing the engines…")):
            plan = plan_compare(spec)
        return say(f"{dataset}, {spec.arch}", *plan.lines(), "dry run: nothing trained, nothing written")
    resume = open_compare(spec, out, overwrite=overwrite, resume=resume)
    check_trackers(spec.inits, spec.run_seeds, tensorboard=tensorboard, mlflow=mlflow)
    with console.status(escape(f"loading {dataset}…")):
        data = compare_data(spec, store=store)
    say(data_line(spec, data))
    result = with_bars(lambda bars: run_compare(spec, out=out, reporter=RichReporter(bars), data=data,
                                                overwrite=overwrite, resume=resume), interrupted_text, out_path(out))
    show(compare_summary(result))
    say(f"{len(result.metrics)} epoch rows in {result.seconds:.1f} s; wrote {out}/: config.json metrics.csv runs.csv "
        "steps.csv summary.json test_acc.png train_loss.png steps.png" + (" probe.csv probe.png" if probe else ""))
    if tensorboard is not None:
        with console.status(escape(f"writing TensorBoard runs to {tensorboard}…")):
            n = export_tensorboard({None: result}, tensorboard, data=data)
        say(f"wrote {n} TensorBoard runs to {tensorboard}/ (tensorboard --logdir {tensorboard})")
    write_html_report(report_html, out)
    if mlflow is not None:  # after the report, so report.html goes with the plots as an artifact
        with console.status(escape(f"logging MLflow runs to {mlflow}…")):
            n, uri = export_mlflow(result, mlflow)
        say(f"logged {n} MLflow runs to {uri} (experiment initlab)")
    if store is not None:
        n = record_results([result], store)
        say(f"run store {store}: {n['recorded']} runs recorded, {n['kept']} already there"
            + (f", {n['unfinished']} unfinished" if n["unfinished"] else ""))
