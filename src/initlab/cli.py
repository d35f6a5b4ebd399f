"""The ``initlab`` command: a thin typer layer over the Python API.

Every user error (unknown name, bad number, missing data, unwritable output) becomes one line on
stderr and exit status 2; interrupting keeps every finished run on disk and exits 130.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="initlab: how should I initialize this network, and why?")
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def split_top_level(text: str) -> list[str]:
    """Split ``"he,normal(std=0.1,mean=0)"`` on commas outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def resolve_hidden(hidden: Optional[str], depth: Optional[int], width: Optional[int]) -> tuple[int, ...]:
    from initlab.models import parse_hidden

    if hidden is not None and (depth is not None or width is not None):
        raise ValueError("give either --hidden or --depth/--width, not both")
    if hidden is not None:
        return parse_hidden(hidden)
    if depth is None and width is None:
        return (128,)
    depth = 1 if depth is None else depth
    width = 128 if width is None else width
    if depth <= 0:
        raise ValueError(f"--depth must be a positive integer (number of hidden layers), got {depth}")
    if width <= 0:
        raise ValueError(f"--width must be a positive integer, got {width}")
    return (width,) * depth


class RichReporter:
    """Progress bars over runs and over all epochs of all runs (the batched engine runs them together)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.total = self.epoch_task = None
        self.seen: dict[tuple, int] = {}

    def start(self, spec, total_runs):
        self.epochs = spec.train.epochs
        self.total = self.progress.add_task("runs", total=total_runs)
        self.epoch_task = self.progress.add_task("epochs", total=total_runs * self.epochs)

    def run_start(self, init, seed):
        self.seen[(init, seed)] = 0

    def epoch_end(self, init, seed, row):
        self.seen[(init, seed)] = self.seen.get((init, seed), 0) + 1
        self.progress.advance(self.epoch_task)
        acc = row.get("test_acc", math.nan)
        self.progress.update(self.epoch_task, description=f"{init} seed {seed} epoch {row['epoch']}  acc {acc:.3f}")

    def run_end(self, init, seed, diverged):
        self.progress.advance(self.epoch_task, self.epochs - self.seen.get((init, seed), self.epochs))
        self.progress.advance(self.total)
        if diverged:
            self.progress.console.print(f"[yellow]{init} seed {seed} diverged[/]")


def fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summary_table(result) -> Table:
    s = result.summary
    spec = result.spec
    table = Table(title=f"{spec.dataset}: final test accuracy after {spec.train.epochs} epochs "
                        f"({spec.seeds} seed{'s' if spec.seeds > 1 else ''})")
    table.add_column("init")
    table.add_column("test acc (mean ± std)", justify="right")
    table.add_column("test loss", justify="right")
    table.add_column("epochs to 95% of best", justify="right")
    table.add_column("diverged", justify="right")
    for r in s.itertuples():
        reach = "never" if math.isnan(r.epochs_to_95) else str(int(r.epochs_to_95))
        acc = fmt(r.final_test_acc_mean) + (f" ± {fmt(r.final_test_acc_std)}" if r.runs - r.diverged > 1 else "")
        table.add_row(r.init, acc,
                      fmt(r.final_test_loss_mean), reach, f"{r.diverged}/{r.runs}")
    return table


@app.command()
def compare(
    inits: str = typer.Option("zero,random,xavier,he", help="Comma-separated schemes, e.g. 'he,normal(std=0.05)'. See `initlab schemes`."),
    dataset: str = typer.Option("mnist", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files (skips lookup and download)."),
    epochs: int = typer.Option(10, help="Training epochs per run."),
    seeds: int = typer.Option(1, help="Runs per init (paired: seed k gives every init the same batches)."),
    first_seed: int = typer.Option(0, help="First run seed."),
    hidden: Optional[str] = typer.Option(None, help="Hidden widths, e.g. '256,256' (default 128)."),
    depth: Optional[int] = typer.Option(None, help="Number of hidden layers (with --width)."),
    width: Optional[int] = typer.Option(None, help="Width of each hidden layer (with --depth)."),
    activation: str = typer.Option("relu", help="relu, leaky_relu, tanh, sigmoid, selu, elu, gelu, silu, linear"),
    optimizer: str = typer.Option("sgd", help="sgd | adam"),
    lr: float = typer.Option(0.01, help="Learning rate."),
    momentum: float = typer.Option(0.0, help="SGD momentum."),
    batch_size: int = typer.Option(64, help="Minibatch size."),
    normalize: str = typer.Option("seed", help="seed: (x-0.5)/0.5 | standardize | none"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    engine: str = typer.Option("batched", help="batched: train all runs at once | single: one run at a time"),
    out: Optional[Path] = typer.Option(Path("runs/compare"), help="Output folder for config, CSVs, summary and plots."),
):
    """Compare init schemes the way the seed notebook meant to: fresh model per run, paired seeds, test set."""
    from initlab.data import DataError, load_dataset
    from initlab.experiment import CompareSpec, run_compare
    from initlab.train import TrainConfig

    try:
        spec = CompareSpec(
            inits=tuple(split_top_level(inits)), dataset=dataset,
            data_dir=None if data_dir is None else str(data_dir), normalize=normalize,
            hidden=resolve_hidden(hidden, depth, width), activation=activation, seeds=seeds,
            first_seed=first_seed, device=device, engine=engine,
            train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, optimizer=optimizer),
        )
        from initlab.store import prepare_out_dir

        if out is not None:
            prepare_out_dir(out)
        with console.status(f"loading {dataset}…"):
            data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
    except (ValueError, DataError) as e:
        fail(str(e))
    console.print(f"[bold]{dataset}[/]: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test, "
                  f"network {data.in_features}-{'-'.join(map(str, spec.hidden))}-{data.num_classes} {activation}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress:
            result = run_compare(spec, out=out, reporter=RichReporter(progress), data=data)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; finished runs are in {out}/metrics.csv" if out else "interrupted")
        raise typer.Exit(130)
    except ValueError as e:
        fail(str(e))
    console.print(summary_table(result))
    console.print(f"{len(result.metrics)} epoch rows in {result.seconds:.1f} s"
                  + (f"; wrote {out}/: config.json metrics.csv steps.csv summary.json test_acc.png train_loss.png steps.png" if out else ""))


def _sci(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def _pair(measured, predicted) -> str:
    if predicted is None or (isinstance(predicted, float) and math.isnan(predicted)):
        return _sci(measured)
    return f"{_sci(measured)} ({_sci(predicted)})"


def probe_table(summary, title: str) -> Table:
    table = Table(title=title)
    for col, just in (("activation", "left"), ("init", "left"), ("std first", "right"), ("std mid", "right"),
                      ("std last", "right"), ("grad first/last", "right"), ("dead", "right"), ("sat", "right"),
                      ("min distinct units", "right")):
        table.add_column(col, justify=just)
    for r in summary.itertuples():
        table.add_row(r.activation, r.init, _pair(r.std_first, r.pred_std_first), _pair(r.std_mid, r.pred_std_mid),
                      _pair(r.std_last, r.pred_std_last), _pair(r.grad_first_over_last, r.pred_grad_first_over_last),
                      fmt(r.dead_frac, 2), fmt(r.sat_frac, 2),
                      "—" if r.distinct_min != r.distinct_min else str(int(r.distinct_min)))
    return table


@app.command()
def probe(
    activations: str = typer.Option("relu,tanh", help="Comma-separated activations for the MLP."),
    inits: str = typer.Option("zero,random,xavier,he,lecun_normal,orthogonal",
                              help="Comma-separated schemes; with --model, 'none' keeps the model's own init."),
    dataset: str = typer.Option("digits", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files."),
    batch: int = typer.Option(512, help="Probe batch: the first BATCH training examples."),
    depth: int = typer.Option(20, help="Number of hidden layers."),
    width: int = typer.Option(256, help="Width of each hidden layer."),
    seed: int = typer.Option(0, help="Seed of the init generator."),
    model: Optional[str] = typer.Option(None, help="Probe your own model: 'module:factory' (factory() -> nn.Module)."),
    out: Path = typer.Option(Path("runs/probe"), help="Output folder for probe.csv, summary.csv and plots."),
):
    """See why: per-layer activation std and gradient norms at init, measured (and predicted by mean-field theory)."""
    from initlab.data import DataError
    from initlab.diagnostics import depth_profile, profile_summary
    from initlab.probe_plots import plot_profile
    from initlab.store import atomic_write_csv, prepare_out_dir

    try:
        prepare_out_dir(out)
        with console.status("probing…"):
            frame = depth_profile(split_top_level(activations), split_top_level(inits), dataset=dataset,
                                  data_dir=None if data_dir is None else str(data_dir), depth=depth, width=width,
                                  batch=batch, seed=seed, model=model)
    except (ValueError, DataError) as e:
        fail(str(e))
    summary = profile_summary(frame)
    arch = f"model {model}" if model else f"{depth}×{width} MLP"
    title = f"{dataset}, {arch}, batch {batch}: at init, measured (mean-field prediction)"
    console.print(probe_table(summary, title))
    atomic_write_csv(out / "probe.csv", frame.drop(columns=["hist_counts", "hist_edges"], errors="ignore"))
    atomic_write_csv(out / "summary.csv", summary)
    paths = plot_profile(frame, out, f"{dataset}, {arch}")
    console.print(f"std: std of the first/middle/last weight layer's output; grad first/last: gradient norm at the "
                  f"first layer over the logits'. wrote {out}/: probe.csv summary.csv " + " ".join(p.name for p in paths))


@app.command()
def schemes():
    """List the init schemes and their aliases."""
    from initlab.schemes import get_scheme, list_aliases, list_schemes

    table = Table(title="init schemes")
    table.add_column("name")
    table.add_column("aliases")
    table.add_column("summary")
    aliases = list_aliases()
    for name in list_schemes():
        fn = get_scheme(name)
        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        table.add_row(name, ", ".join(sorted(a for a, t in aliases.items() if t == name)), doc[0] if doc else "")
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
