"""``initlab compare``: the seed's experiment done right, on any model."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.cli.common import (
    MODEL_HELP,
    OUT_HELP,
    REPORT_HELP,
    check_positive,
    console,
    fail,
    fmt,
    interrupted,
    resolve_hidden,
    split_top_level,
    status_cell,
    write_html_report,
)
from initlab.core.activations import ACTIVATIONS
from initlab.data import load_dataset
from initlab.experiments.compare import (
    CompareSpec,
    check_memory,
    check_resume,
    plan_compare,
    prepare_data,
    resumable,
    run_compare,
)
from initlab.experiments.progress import RichReporter, bars
from initlab.experiments.sweeps.record import compare_sweep, record_compare
from initlab.models import arch_text
from initlab.store import check_out_dir, out_path
from initlab.trackers import mlflow as mx
from initlab.trackers import tensorboard as tb
from initlab.training.loop import TrainConfig, resolve_device


def summary_table(result) -> Table:
    s = result.summary
    spec = result.spec
    state = "" if result.complete else " — INTERRUPTED, partial"
    table = Table(title=escape(f"{spec.dataset}: final test accuracy after {spec.train.epochs} epochs "
                               f"({spec.seeds} seed{'s' if spec.seeds > 1 else ''}){state}"),
                  caption=escape(f"mean over runs that finished every epoch; chance: "
                                 f"≤ {result.chance['threshold']:.3f} (majority class {result.chance['rate']:.3f} "
                                 f"+ 3 binomial σ)") if result.chance else None)
    table.add_column("init")
    table.add_column("test acc (mean ± std)", justify="right")
    table.add_column("test loss", justify="right")
    table.add_column("epochs to 95% of best", justify="right")
    table.add_column("runs", justify="right")
    for r in s.itertuples():
        if r.at_chance:
            reach = "at chance"
        elif r.done == 0:
            reach = "—"
        else:
            reach = "never" if math.isnan(r.epochs_to_95) else str(int(r.epochs_to_95))
        acc = fmt(r.final_test_acc_mean) + (f" ± {fmt(r.final_test_acc_std)}" if r.done > 1 else "")
        table.add_row(Text(r.init), acc, fmt(r.final_test_loss_mean), reach, Text(status_cell(r)))
    return table


def compare(
    inits: str = typer.Option("zero,random,xavier,he", help="Comma-separated schemes, e.g. 'he,normal(std=0.05)'. See `initlab schemes`."),
    dataset: str = typer.Option("mnist", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files (skips lookup and download); not for digits."),
    epochs: int = typer.Option(10, help="Training epochs per run."),
    seeds: int = typer.Option(1, help="Runs per init (paired: seed k gives every init the same batches)."),
    first_seed: int = typer.Option(0, help="First run seed."),
    hidden: Optional[str] = typer.Option(None, help="Hidden widths, e.g. '256,256' (default 128)."),
    depth: Optional[int] = typer.Option(None, help="Number of hidden layers (with --width)."),
    width: Optional[int] = typer.Option(None, help="Width of each hidden layer (with --depth)."),
    activation: str = typer.Option("relu", help=", ".join(ACTIVATIONS)),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    optimizer: str = typer.Option("sgd", help="sgd | adam"),
    lr: float = typer.Option(0.01, help="Learning rate."),
    momentum: float = typer.Option(0.0, help="SGD momentum (sgd only)."),
    batch_size: int = typer.Option(64, help="Minibatch size."),
    normalize: str = typer.Option("seed", help="seed: (x-0.5)/0.5 | standardize | none"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    engine: str = typer.Option("auto", help="auto: the engine measured fastest on these shapes (a few steps of "
                               "each) | batched: train groups of runs at once | single: one run at a time"),
    probe: bool = typer.Option(True, help="Record per-layer statistics (dead units, symmetry, gradients) every epoch."),
    diverge_loss: float = typer.Option(1000.0, help="A run diverges when its end-of-epoch test loss exceeds "
                                                    "DIVERGE_LOSS × ln(classes) (or any loss/activation is NaN/inf); inf: no bound."),
    out: str = typer.Option("runs/compare", help="Output folder for config, CSVs, summary and plots. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
    resume: bool = typer.Option(False, help="Continue the unfinished runs of an interrupted compare in --out (same options)."),
    dry_run: bool = typer.Option(False, help="Print the plan (runs, memory, the engine and its measured rates); "
                                 "train nothing, write nothing."),
    store: Optional[str] = typer.Option(None, "--store", help="Also commit the finished runs to this SQLite run store "
                                        "(as `initlab sweep` would name them; see `initlab runs`)."),
    tensorboard: Optional[str] = typer.Option(None, "--tensorboard", help="Also export TensorBoard runs to this folder after "
                                              "training: one run per init and seed (DIR/<init>/seed<k>) with step/epoch "
                                              "scalars, probe statistics, init weight histograms and hparams. "
                                              "Needs: pip install 'initlab[tensorboard]'."),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", help="Also log to MLflow after training: one run per init and "
                                         "seed in experiment 'initlab' with params, per-step/epoch metrics, probe "
                                         "statistics, status tags and the plots/report as artifacts. URI: a folder "
                                         "(local SQLite store DIR/mlflow.db, e.g. mlruns), a .db file, or a tracking URI "
                                         "(sqlite:///..., http://...). Needs: pip install 'initlab[mlflow]'."),
):
    """Compare init schemes the way the seed notebook meant to: fresh model per run, paired seeds, test set."""

    try:
        check_positive(epochs=epochs, seeds=seeds, batch_size=batch_size)
        spec = CompareSpec(
            inits=split_top_level(inits, "--inits"), dataset=dataset,
            data_dir=None if data_dir is None else str(data_dir), normalize=normalize,
            hidden=resolve_hidden(hidden, depth, width), activation=activation, seeds=seeds,
            first_seed=first_seed, device=device, engine=engine, probe=probe, model=model,
            train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, optimizer=optimizer,
                              diverge_loss=diverge_loss),
        )
        if dry_run:
            with console.status(escape(f"loading {dataset}, timing the engines…")):
                plan = plan_compare(spec)
            for line in [f"{dataset}, {spec.arch}"] + plan.lines():
                console.print(Text(line))
            console.print(Text("dry run: nothing trained, nothing written"))
            return
        resume = resumable(out, resume)
        check_out_dir(out, "compare", overwrite=overwrite, resume=resume)
        if resume:
            check_resume(out, spec)
        if tensorboard is not None:  # before any training: a missing package or a used folder is one line now

            tb.require()
            tb.check_logdir(tensorboard, spec.inits, spec.run_seeds)
        if mlflow is not None:  # before any training: a missing package or an unusable store is one line now

            mx.check(mlflow)
        with console.status(escape(f"loading {dataset}…")):
            data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
        check_memory(spec, data, resolve_device(spec.device))
        data = prepare_data(spec, data)  # the model runs on this data and returns logits, or one line now
        if store is not None:  # a comparison the store cannot express is refused before training

            compare_sweep(spec)
    except ValueError as e:  # includes DataError
        fail(str(e))
    net = spec.arch if spec.model is not None else \
        f"{arch_text([data.in_features, *spec.hidden, data.num_classes])} {activation}"
    console.print(Text(f"{dataset}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test, network {net}"))
    progress = bars(console)
    try:
        with progress:
            result = run_compare(spec, out=out, reporter=RichReporter(progress), data=data,
                                 overwrite=overwrite, resume=resume)
    except KeyboardInterrupt as e:
        interrupted(e, out_path(out))
    except ValueError as e:
        fail(str(e))
    console.print(summary_table(result))
    console.print(Text(f"{len(result.metrics)} epoch rows in {result.seconds:.1f} s; wrote {out}/: config.json "
                       "metrics.csv runs.csv steps.csv summary.json test_acc.png train_loss.png steps.png"
                       + (" probe.csv probe.png" if probe else "")))
    if tensorboard is not None:
        try:
            with console.status(escape(f"writing TensorBoard runs to {tensorboard}…")):
                tb_runs = tb.export(result, tensorboard, data=data)
        except (ValueError, OSError) as e:
            fail(f"TensorBoard export to '{tensorboard}' failed: {e}")
        console.print(Text(f"wrote {len(tb_runs)} TensorBoard runs to {tensorboard}/ (tensorboard --logdir {tensorboard})"))
    write_html_report(report_html, out)
    if mlflow is not None:  # after the report, so report.html goes with the plots as an artifact
        try:
            with console.status(escape(f"logging MLflow runs to {mlflow}…")):
                ml_runs = mx.export(result, mlflow)
        except (ValueError, OSError) as e:
            fail(f"MLflow export to '{mlflow}' failed: {e}")
        console.print(Text(f"logged {len(ml_runs)} MLflow runs to {mx.resolve(mlflow)[0]} (experiment initlab)"))
    if store is not None:
        try:
            n = record_compare(result, store)
        except (ValueError, OSError) as e:
            fail(f"recording into the run store '{store}' failed: {e}")
        console.print(Text(f"run store {store}: {n['recorded']} runs recorded, {n['kept']} already there"
                           + (f", {n['unfinished']} unfinished" if n["unfinished"] else "")))
