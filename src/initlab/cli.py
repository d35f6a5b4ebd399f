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
    probe: bool = typer.Option(True, help="Record per-layer statistics (dead units, symmetry, gradients) every epoch."),
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
            first_seed=first_seed, device=device, engine=engine, probe=probe,
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
                  + (f"; wrote {out}/: config.json metrics.csv steps.csv summary.json test_acc.png train_loss.png steps.png"
                     + (" probe.csv probe.png" if probe else "") if out else ""))


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


class SweepReporter(RichReporter):
    """RichReporter over a depth sweep: one bar for depths, one for runs of a depth, one for epochs."""

    def __init__(self, progress: Progress, depths):
        super().__init__(progress)
        self.depth_task = progress.add_task("depths", total=len(depths))
        self.depth = None

    def start(self, spec, total_runs):
        self.depth = len(spec.hidden)
        if self.total is None:
            super().start(spec, total_runs)
        else:
            self.progress.reset(self.total, total=total_runs)
        self.progress.update(self.total, description=f"depth {self.depth}: runs")

    def run_end(self, init, seed, diverged):
        self.progress.advance(self.total)
        if diverged:
            self.progress.console.print(f"[yellow]depth {self.depth}: {init} seed {seed} diverged[/]")


def depth_table(result) -> Table:
    table = Table(title=f"{result.dataset}: final test accuracy vs depth (width {result.width}, {result.activation}, "
                        f"{result.epochs} epochs, {result.seeds} seed{'s' if result.seeds > 1 else ''})")
    table.add_column("init")
    for d in result.depths:
        table.add_column(f"depth {d}", justify="right")
    s = result.summary.set_index(["init", "depth"])
    for init in result.inits:
        cells = []
        for d in result.depths:
            r = s.loc[(init, d)]
            cell = fmt(r["final_test_acc_mean"], 3)
            if r["runs"] - r["diverged"] > 1:
                cell += f" ± {fmt(r['final_test_acc_std'], 3)}"
            if r["diverged"]:
                cell += f" ({int(r['diverged'])}/{int(r['runs'])} div.)"
            cells.append(cell)
        table.add_row(init, *cells)
    return table


@app.command()
def depth(
    depths: str = typer.Option("2,5,10,20,30", help="Comma-separated numbers of hidden layers."),
    inits: str = typer.Option("zero,random,xavier,he", help="Comma-separated schemes (see `initlab schemes`)."),
    dataset: str = typer.Option("digits", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files."),
    width: int = typer.Option(64, help="Units in every hidden layer."),
    activation: str = typer.Option("relu", help="relu, leaky_relu, tanh, sigmoid, selu, elu, gelu, silu, linear"),
    epochs: int = typer.Option(10, help="Training epochs per run."),
    seeds: int = typer.Option(1, help="Runs per init and depth."),
    lr: float = typer.Option(0.01, help="Learning rate."),
    optimizer: str = typer.Option("sgd", help="sgd | adam"),
    momentum: float = typer.Option(0.0, help="SGD momentum."),
    batch_size: int = typer.Option(64, help="Minibatch size."),
    log_x: bool = typer.Option(True, help="Log-scale depth axis in depth_acc.png."),
    threads: int = typer.Option(1, help="torch CPU threads; small MLPs run fastest on 1."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    out: Optional[Path] = typer.Option(Path("runs/depth"), help="Output folder: depth_XX/ per depth, depth_*.csv, depth_acc.png."),
):
    """Train every init at several depths: where does each one stop training? (He et al. 2015, 30 layers)."""
    import torch

    from initlab.experiment import CompareSpec
    from initlab.sweep import depth_sweep, parse_depths
    from initlab.train import TrainConfig

    try:
        depth_list = parse_depths(depths)
        if width <= 0:
            raise ValueError(f"--width must be a positive integer, got {width}")
        if threads <= 0:
            raise ValueError(f"--threads must be a positive integer, got {threads}")
        init_list = tuple(split_top_level(inits))
        CompareSpec(inits=init_list, dataset=dataset, hidden=(width,), activation=activation, seeds=seeds,
                    device=device, train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                                     momentum=momentum, optimizer=optimizer))
        if out is not None:
            from initlab.store import prepare_out_dir

            prepare_out_dir(out)
    except ValueError as e:
        fail(str(e))
    torch.set_num_threads(threads)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress:
            reporter = SweepReporter(progress, depth_list)
            result = depth_sweep(depth_list, init_list, dataset=dataset, width=width, activation=activation,
                                 epochs=epochs, seeds=seeds, lr=lr, out=out, batch_size=batch_size,
                                 optimizer=optimizer, momentum=momentum, device=device, log_x=log_x,
                                 data_dir=None if data_dir is None else str(data_dir), reporter=reporter,
                                 on_depth=lambda d, r: progress.advance(reporter.depth_task))
    except KeyboardInterrupt:
        err_console.print(f"interrupted; finished depths are in {out}/depth_metrics.csv" if out else "interrupted")
        raise typer.Exit(130)
    except ValueError as e:  # includes DataError
        fail(str(e))
    console.print(depth_table(result))
    console.print(f"{len(depth_list)} depths in {result.seconds:.1f} s"
                  + (f"; wrote {out}/: depth_XX/ depth_metrics.csv depth_summary.csv sweep.json depth_acc.png" if out else ""))


VERDICT_STYLE = {"confirmed": "green", "refuted": "red", "depends": "yellow"}


@app.command()
def claims(
    only: Optional[str] = typer.Option(None, help="Comma-separated claim ids to run (default: all). See --list."),
    out: Optional[Path] = typer.Option(Path("runs/claims"), help="Output folder: claims.json, claims.md, PNGs."),
    list_: bool = typer.Option(False, "--list", help="List the claims and exit."),
    quick: bool = typer.Option(False, help="Smaller experiments (seconds in all); verdicts may be less sharp."),
    threads: int = typer.Option(1, help="torch CPU threads; small MLPs run fastest on 1."),
):
    """Test every claim of the seed notebook (Parts 1-2) with a small experiment: confirmed / refuted / depends."""
    import torch

    from initlab.claims import CLAIMS, get_claim, run_claims

    if list_:
        table = Table(title="claims of the seed notebook")
        table.add_column("id")
        table.add_column("section")
        table.add_column("claim")
        for c in CLAIMS.values():
            table.add_row(c.id, c.section, c.short)
        console.print(table)
        return
    try:
        ids = None if only is None else split_top_level(only)
        if ids is not None:
            if not ids:
                raise ValueError(f"--only needs claim ids; choose from: {', '.join(CLAIMS)}")
            for i in ids:
                get_claim(i)
        if threads <= 0:
            raise ValueError(f"--threads must be a positive integer, got {threads}")
        if out is not None:
            from initlab.store import prepare_out_dir

            prepare_out_dir(out)
    except ValueError as e:
        fail(str(e))
    torch.set_num_threads(threads)
    table = Table(title="the seed notebook's claims, tested")
    table.add_column("id", no_wrap=True)
    table.add_column("claim")
    table.add_column("verdict")
    table.add_column("evidence")
    n = len(ids) if ids is not None else len(CLAIMS)
    with console.status(f"checking {n} claims…") as status:
        def done(claim, res):
            status.update(f"checked {claim.id}: {res.verdict} ({res.seconds:.1f} s)")
            verdict = f"[{VERDICT_STYLE[res.verdict]}]{res.verdict}[/]" + (f" ({res.condition})" if res.condition else "")
            table.add_row(claim.id, claim.short, verdict, res.summary)

        try:
            results = run_claims(ids, out=out, quick=quick, on_result=done)
        except KeyboardInterrupt:
            err_console.print(f"interrupted; finished claims are in {out}/claims.json" if out else "interrupted")
            raise typer.Exit(130)
    console.print(table)
    total = sum(r.seconds for r in results)
    console.print(f"{len(results)} claims in {total:.1f} s" + (f"; wrote {out}/: claims.json claims.md and plots" if out else ""))


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Usage errors (bad option value, unknown option) print one line, exit 2."""
    try:
        rv = app(args=argv, prog_name="initlab", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # the CLI framework's usage errors carry a message and an exit code
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if not e.format_message().strip():  # bare `initlab`: help was printed, nothing went wrong
            sys.exit(0)
        name = getattr(getattr(e, "ctx", None), "command_path", "initlab")
        err_console.print(f"[bold red]error:[/] {e.format_message()} (see '{name} --help')",
                          highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
