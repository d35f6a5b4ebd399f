"""``initlab sweep``, ``initlab runs list|show|export|best|heatmap`` and ``initlab phase`` (over the run store)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.text import Text
from typer import Argument, Option

from initlab.cli.common import BatchSize, Dataset, RunStore, Threads, call, err_console, handled, say, show, with_bars
from initlab.experiments.options import phase_request, sweep_spec
from initlab.experiments.progress import sweep_interrupted_text
from initlab.experiments.sweeps.phase import write_phase
from initlab.experiments.sweeps.plan import make_plan
from initlab.experiments.sweeps.plots import best_lr_runs, plot_lr_sensitivity, store_heatmap
from initlab.experiments.sweeps.progress import RichSweepReporter
from initlab.experiments.sweeps.run import run_sweep
from initlab.experiments.sweeps.runstore import export_runs, open_store, select_runs
from initlab.report import tables

runs_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                       help="Read the run store: list sweeps and runs, show one, export, best lr, heat maps.")
Axis = lambda text: Annotated[str | None, Option(help=text)]  # noqa: E731  (a sweep axis: comma-separated values)
Sweep = Annotated[str | None, Option(help="A sweep (name, id or hash); default: the latest.")]


def sweep(
    spec_file: Path | None = Argument(None, help="A sweep spec (TOML); options below override its keys."),
    inits: Axis("Init axis: comma-separated schemes, e.g. 'xavier,he,normal(std=0.05)'.") = None,
    model: Axis("Model axis: zoo specs ('cnn(channels=8)') or a 'module:factory'; default the MLP.") = None,
    depth: Axis("Depth axis: MLP hidden layers (or a zoo model's depth parameter), e.g. '1,2,4'.") = None,
    width: Axis("Width axis (MLP), e.g. '64,128'.") = None, activation: Axis("Activation axis (MLP), e.g. 'relu,tanh'.") = None,
    optimizer: Axis("Optimizer axis: sgd, adam.") = None, lr: Axis("Learning-rate axis, e.g. '0.001,0.01,0.1'.") = None,
    momentum: Axis("SGD momentum axis, e.g. '0,0.9'.") = None, batch_size: Axis("Batch-size axis.") = None,
    epochs: Axis("Epochs axis.") = None, dataset: Axis("Dataset axis: digits, mnist, fashion-mnist.") = None,
    seeds: Axis("A count ('3': seeds 0,1,2) or a list ('0,5,7').") = None,
    zip_axes: str | None = Option(None, "--zip", help="Axes that move together, e.g. 'depth+width' (groups separated "
                                  "by ',')."),
    name: Axis("Sweep name (for listings).") = None,
    val_fraction: float | None = Option(None, help="Validation split carved from train, per class (default 0.1; 0: "
                                        "none)."),
    val_seed: int | None = Option(None, help="Seed fixing the validation split."),
    normalize: Axis("seed | standardize | none") = None, data_dir: Axis("Folder with the IDX files (not for digits).") = None,
    train_eval: Axis("Training-set accuracy: none | final | every (epoch).") = None,
    probe: bool | None = Option(None, help="Per-layer statistics at init and after the last epoch."),
    device: Axis("auto | cpu | cuda") = None, engine: Axis("batched | single (same results).") = None,
    store: RunStore = "runs/sweeps.db",
    dry_run: bool = Option(False, help="Print the plan (runs, engine groups, time, memory); run nothing."),
    max_group: int | None = Option(None, help="Most models trained at once (default: what fits 1 GiB)."),
    threads: int = Option(1, help="torch CPU threads; batched small models run fastest on 1 per worker."),
    backend: str = Option("local", help="local: this process | ray: one Ray task per engine group (pip install "
                          "'initlab[ray]'), results committed here."),
    address: Axis("With --backend ray: the cluster to join (default: start a local one).") = None,
    plots: Path | None = Option(None, help="Folder for lr_sensitivity.png (when lr varies)."),
):
    """Run a grid of experiments into the run store; rerun the same command to resume after a crash."""
    spec = call(sweep_spec, locals())
    torch.set_num_threads(threads)
    plan = make_plan(spec, max_group=max_group)
    if dry_run:
        show(tables.sweep_plan(plan))
        return say(f"dry run: nothing trained, nothing written (store would be {store})")
    result = with_bars(lambda bars: run_sweep(spec, store, reporter=RichSweepReporter(bars), plan=plan, backend=backend,
                                              max_group=max_group, address=address), sweep_interrupted_text, store)
    say(tables.sweep_counts(result, spec.name, store))
    for err in dict.fromkeys(result.errors):
        err_console.print(Text(f"failed: {err}", style="red"), soft_wrap=True)
    table = tables.best_lrs(result.runs)
    if table is not None:
        show(table)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            say(f"wrote {plot_lr_sensitivity(result.runs, plots / 'lr_sensitivity.png', title=spec.name)}")
    if result.counts["failed"]:
        raise typer.Exit(1)


def runs_list(sweep: str | None = Option(None, help="A sweep (name, id or hash): list its runs. Default: list the sweeps."),
              status: str | None = Option(None, help="Only runs with these statuses, e.g. 'failed,interrupted'."),
              store: RunStore = "runs/sweeps.db", limit: int = Option(50, help="Most runs shown.")):
    """The sweeps in the store with their run counts, or the runs of one sweep."""
    st = open_store(store)
    if sweep is None and status is None:
        return show(tables.sweep_list(st.sweeps(), store))
    sw, frame = select_runs(st, sweep, status)
    show(tables.run_list(frame, sw, limit))
    if len(frame) > limit:
        say(f"… {len(frame) - limit} more; use --limit or `initlab runs export`")


def runs_show(run: str = Argument(..., help="Run id or hash (a unique prefix)."), store: RunStore = "runs/sweeps.db"):
    """One run: its parameters, status, timings and every epoch."""
    info = open_store(store).run(run)
    show(tables.run_card(info), show_header=False)
    if len(info["epochs"]):
        show(tables.run_epochs(info["epochs"]))


def runs_export(out: Path = Option(..., help="File to write: .csv, or .parquet when pyarrow is installed."),
                sweep: str | None = Option(None, help="A sweep (name, id or hash); default: every run in the store."),
                epochs: bool = Option(False, help="One row per run per epoch (run parameters repeated) instead of "
                                      "per run."), store: RunStore = "runs/sweeps.db"):
    """Export runs (or epochs) with their parameters as columns."""
    say(f"wrote {export_runs(store, out, sweep=sweep, epochs=epochs)} rows to {out}")


def runs_best(sweep: Sweep = None,
              plot: Path | None = Option(None, help="Write the lr-sensitivity plot (validation accuracy vs lr) here."),
              fixed_lr: float | None = Option(None, help="Also show test accuracy at this one lr (the fixed-lr "
                                              "protocol)."), store: RunStore = "runs/sweeps.db"):
    """Best lr per init chosen on validation, test accuracy there, paired comparison at each init's best lr."""
    sw, runs = best_lr_runs(store, sweep)
    shown = [tables.best_lrs(runs)] + ([] if fixed_lr is None else [tables.fixed_lr(runs, fixed_lr)])
    if plot is not None:
        plot_lr_sensitivity(runs, plot, title=sw["name"])
    show(*shown)
    if plot is not None:
        say(f"wrote {plot}")


def runs_heatmap(
    x: str = Option(..., help="Column for the x axis: an axis (lr, depth, width, init, ...) or init.<param>."),
    y: str = Option(..., help="Column for the y axis."), out: Path = Option(..., help="PNG file to write."),
    metric: str = Option("final_val_acc", help="final_val_acc, final_test_acc, final_train_acc, final_*_loss, ..."),
    agg: str = Option("mean", help="Aggregate over the runs of a cell: mean, median, min, max."),
    sweep: Sweep = None, store: RunStore = "runs/sweeps.db",
):
    """A heat map of any metric over any two sweep axes (mean over the other axes' runs)."""
    table = store_heatmap(store, x, y, metric, out, agg=agg, sweep=sweep)
    say(f"wrote {out} ({table.shape[0]}×{table.shape[1]} cells)")


def phase(
    sigma_w2: str = Option("1:4:13", help="σ_w² values: 'start:stop:num' (evenly spaced) or a list '1,1.5,2'."),
    depths: str = Option("10,20,30,40,50,60,70,80", help="Depths (hidden layers)."),
    sigma_b2: float = Option(0.05, help="Bias variance σ_b²."), width: int = Option(64, help="Hidden width."),
    dataset: Dataset = "digits", steps: int = Option(300, help="SGD steps (rounded up to whole epochs)."),
    lr: float = Option(0.01, help="SGD learning rate."), batch_size: BatchSize = 32,
    seeds: int = Option(1, help="Seeds per cell."), store: RunStore = "runs/sweeps.db",
    out: Path = Option(Path("runs/phase.png"), help="The heat map (PNG)."), threads: Threads = 1,
    dry_run: bool = Option(False, help="Print the plan only."),
):
    """Trainability phase diagram (Schoenholz et al. 2017): tanh MLP training accuracy over (σ_w², depth) vs 6 ξ_c."""
    spec = call(phase_request, locals())
    torch.set_num_threads(threads)
    plan = make_plan(spec)
    if dry_run:
        return show(tables.sweep_plan(plan))
    result = with_bars(lambda bars: run_sweep(spec, store, reporter=RichSweepReporter(bars), plan=plan),
                       sweep_interrupted_text, store)
    table = write_phase(spec, result.runs, out)
    show(tables.phase_grid(table, dataset=dataset, width=width, epochs=spec.runs()[0]["epochs"]),
         padding=(0, 0, 0, 1), box=None)
    say(f"trains (≥ {table.threshold:.2f}) agrees with depth < 6 ξ_c in {table.agreement:.0%} of "
        f"{len(table.cells)} cells; {result.seconds:.0f} s; wrote {out}; runs in {store}")


def register(app: typer.Typer) -> None:
    """Add ``sweep``, ``runs`` and ``phase`` to the ``initlab`` app (their errors one line, exit 2)."""
    for name, command in (("list", runs_list), ("show", runs_show), ("export", runs_export), ("best", runs_best),
                          ("heatmap", runs_heatmap)):
        runs_app.command(name)(handled(command))
    app.command("sweep")(handled(sweep))
    app.add_typer(runs_app, name="runs")
    app.command("phase")(handled(phase))
