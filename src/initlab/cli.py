"""The ``initlab`` command: a thin typer layer over the Python API.

Every user error (unknown name, bad number, missing data, unwritable output) becomes one line on
stderr and exit status 2. User text is never read as rich markup or emoji codes. Ctrl-C and
SIGTERM stop cleanly: the result folder says which runs and epochs finished, the message says the
same, and the exit status is 130 (SIGINT) or 143 (SIGTERM); ``--resume`` continues.
"""
from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="initlab: how should I initialize this network, and why?")
# emoji=False: ':ok:' in a user's scheme name stays ':ok:'; markup is ours only (user text is escaped)
console = Console(emoji=False, highlight=False)
err_console = Console(stderr=True, emoji=False, highlight=False)

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so the same clean stop as Ctrl-C runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def one_line(message: str) -> str:
    """``message`` on one line with control characters shown escaped (``\\x1b``), never sent raw."""
    text = " ".join(str(message).split())
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def fail(message: str) -> None:
    """Print a one-line error (``message`` verbatim, never markup) and exit with status 2."""
    err_console.print(Text.assemble(("error: ", "bold red"), one_line(message)), soft_wrap=True)
    raise typer.Exit(2)


def split_top_level(text: str, what: str = "list") -> list[str]:
    """Comma-separated items, split outside parentheses; empty items are an error."""
    from initlab.schemes import split_top_level as split

    return split(text, what=what)


def resolve_hidden(hidden: Optional[str], depth: Optional[int], width: Optional[int]) -> tuple[int, ...]:
    from initlab.models import MAX_DEPTH, MAX_WIDTH, parse_hidden

    if hidden is not None and (depth is not None or width is not None):
        raise ValueError("give either --hidden or --depth/--width, not both")
    if hidden is not None:
        return parse_hidden(hidden)
    if depth is None and width is None:
        return (128,)
    depth = 1 if depth is None else depth
    width = 128 if width is None else width
    if not 0 < depth <= MAX_DEPTH:
        raise ValueError(f"--depth must be a positive integer up to {MAX_DEPTH} (number of hidden layers), got {depth}")
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"--width must be a positive integer up to {MAX_WIDTH}, got {width}")
    return (width,) * depth


def check_threads(threads: int) -> None:
    """Threads beyond the CPUs only slow torch down, and huge counts overflow or exhaust the OS."""
    import os

    cpus = os.cpu_count() or 1
    if not 0 < threads <= cpus:
        raise ValueError(f"--threads must be from 1 to {cpus} (this machine's CPUs), got {threads}")


def check_positive(**values: int) -> None:
    """One-line errors for integer options that must be positive (and fit int64)."""
    from initlab.train import MAX_INT

    for name, v in values.items():
        if not 0 < v <= MAX_INT:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")


def interrupted(e: KeyboardInterrupt, out: Optional[Path]) -> None:
    """Say truthfully what an interrupted comparison left, then exit 130 (SIGINT) or 143 (SIGTERM)."""
    code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
    what = "terminated" if code == EXIT_SIGTERM else "interrupted"
    result = getattr(e, "result", None)
    msg = what
    if result is not None and result.runs is not None:
        st = result.runs["status"]
        n, fin = len(st), int(st.isin(["done", "diverged"]).sum())
        cut = result.runs[st == "interrupted"]
        msg += f": {fin} of {n} runs finished ({int((st == 'done').sum())} done, {int((st == 'diverged').sum())} diverged)"
        if len(cut):
            lo, hi = int(cut["epochs_done"].min()), int(cut["epochs_done"].max())
            span = f"{lo}" if lo == hi else f"{lo}–{hi}"
            msg += f", {len(cut)} interrupted after {span} of {result.spec.train.epochs} epochs"
        queued = int((st == "queued").sum())
        if queued:
            msg += f", {queued} not started"
        if out is not None:
            msg += f"; statuses are in {out}/runs.csv and metrics.csv"
            if fin < n:
                msg += "; rerun the same command with --resume to finish the rest"
    elif out is not None and out.exists():
        msg += f" before any run finished; {out} holds only what was written so far"
    finished = getattr(e, "finished_depths", None)
    if finished is not None:
        msg += f"; finished depths: {', '.join(map(str, finished)) or 'none'}"
    err_console.print(Text(msg), soft_wrap=True)
    raise typer.Exit(code)


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

    def run_skipped(self, init, seed, status):
        self.run_end(init, seed, False)

    def epoch_end(self, init, seed, row):
        self.seen[(init, seed)] = self.seen.get((init, seed), 0) + 1
        self.progress.advance(self.epoch_task)
        acc = row.get("test_acc", math.nan)
        self.progress.update(self.epoch_task,
                             description=escape(f"{init} seed {seed} epoch {row['epoch']}  acc {acc:.3f}"))

    def note(self, message):
        self.progress.console.print(Text(message, style="yellow"))

    def run_end(self, init, seed, diverged, reason=None):
        self.progress.advance(self.epoch_task, self.epochs - self.seen.get((init, seed), self.epochs))
        self.progress.advance(self.total)
        if diverged:
            self.progress.console.print(Text(f"{init} seed {seed} diverged: {reason or 'see metrics.csv'}",
                                             style="yellow"))


def write_html_report(enabled: bool, out) -> None:
    """``--report``: write ``out/report.html`` after a command finished (one-line error, exit 2, if it cannot)."""
    if not enabled:
        return
    from initlab.report import write_report

    try:
        written = write_report(out)
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        from initlab.store import write_error

        fail(str(write_error(e)))
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(written))
    console.print(Text(f"wrote {shown}"))


def fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def status_cell(r) -> str:
    """``3 done`` / ``2 done, 1 diverged`` / ``1 done, 2 interrupted`` for one init's runs."""
    parts = [f"{n} {label}" for n, label in ((r.done, "done"), (r.diverged, "diverged"),
                                             (r.interrupted, "interrupted")) if n]
    return ", ".join(parts) or "—"


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


REPORT_HELP = "Also write report.html into --out: one self-contained page (see `initlab report`)."
MODEL_HELP = ("A zoo model, e.g. 'cnn', 'resnet(blocks=20,norm=none)' (see `initlab models`), or your own "
              "'module:factory' (called per run; gets in_shape/num_classes if it asks). Default: the MLP of "
              "--hidden/--activation.")
OUT_HELP = ("Must be new, empty, or an earlier initlab result folder (with --overwrite or --resume); "
            "initlab never writes over files it did not create.")


@app.command()
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
    activation: str = typer.Option("relu", help="relu, leaky_relu, tanh, sigmoid, selu, elu, gelu, silu, linear"),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    optimizer: str = typer.Option("sgd", help="sgd | adam"),
    lr: float = typer.Option(0.01, help="Learning rate."),
    momentum: float = typer.Option(0.0, help="SGD momentum (sgd only)."),
    batch_size: int = typer.Option(64, help="Minibatch size."),
    normalize: str = typer.Option("seed", help="seed: (x-0.5)/0.5 | standardize | none"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    engine: str = typer.Option("batched", help="batched: train groups of runs at once | single: one run at a time"),
    probe: bool = typer.Option(True, help="Record per-layer statistics (dead units, symmetry, gradients) every epoch."),
    diverge_loss: float = typer.Option(1000.0, help="A run diverges when its end-of-epoch test loss exceeds "
                                                    "DIVERGE_LOSS × ln(classes) (or any loss/activation is NaN/inf); inf: no bound."),
    out: str = typer.Option("runs/compare", help="Output folder for config, CSVs, summary and plots. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
    resume: bool = typer.Option(False, help="Continue the unfinished runs of an interrupted compare in --out (same options)."),
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
    from initlab.data import load_dataset
    from initlab.experiment import CompareSpec, check_memory, check_resume, prepare_data, resumable, run_compare
    from initlab.models import arch_text
    from initlab.store import check_out_dir
    from initlab.train import TrainConfig, resolve_device

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
        resume = resumable(out, resume)
        check_out_dir(out, "compare", overwrite=overwrite, resume=resume)
        if resume:
            check_resume(out, spec)
        if tensorboard is not None:  # before any training: a missing package or a used folder is one line now
            from initlab import tensorboard as tb

            tb.require()
            tb.check_logdir(tensorboard, spec.inits, spec.run_seeds)
        if mlflow is not None:  # before any training: a missing package or an unusable store is one line now
            from initlab import mlflow_export as mx

            mx.check(mlflow)
        with console.status(escape(f"loading {dataset}…")):
            data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
        check_memory(spec, data, resolve_device(spec.device))
        data = prepare_data(spec, data)  # the model runs on this data and returns logits, or one line now
        if store is not None:  # a comparison the store cannot express is refused before training
            from initlab.sweeps.record import compare_sweep

            compare_sweep(spec)
    except ValueError as e:  # includes DataError
        fail(str(e))
    net = spec.arch if spec.model is not None else \
        f"{arch_text([data.in_features, *spec.hidden, data.num_classes])} {activation}"
    console.print(Text(f"{dataset}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test, network {net}"))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress:
            result = run_compare(spec, out=out, reporter=RichReporter(progress), data=data,
                                 overwrite=overwrite, resume=resume)
    except KeyboardInterrupt as e:
        interrupted(e, Path(out))
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
        from initlab.sweeps.record import record_compare

        try:
            n = record_compare(result, store)
        except (ValueError, OSError) as e:
            fail(f"recording into the run store '{store}' failed: {e}")
        console.print(Text(f"run store {store}: {n['recorded']} runs recorded, {n['kept']} already there"
                           + (f", {n['unfinished']} unfinished" if n["unfinished"] else "")))


def _sci(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def _pair(measured, predicted) -> str:
    if predicted is None or (isinstance(predicted, float) and math.isnan(predicted)):
        return _sci(measured)
    return f"{_sci(measured)} ({_sci(predicted)})"


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
                      "—" if r.jac_mean_sq != r.jac_mean_sq else f"{_sci(r.jac_mean_sq)} ({r.jac_decades:.1f})")
    return table


@app.command()
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
    from initlab.diagnostics import depth_profile, profile_summary
    from initlab.models import MAX_DEPTH, MAX_WIDTH
    from initlab.probe_plots import plot_profile
    from initlab.schemes import parse_scheme_list
    from initlab.store import atomic_write_csv, check_out_dir, claim_out_dir
    from initlab.train import MAX_INT

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
        from initlab.store import write_error

        fail(str(write_error(e)))
    console.print(Text(f"std: std of the first/middle/last weight layer's output; grad first/last: gradient norm at "
                       f"the first layer over the logits'. wrote {out_dir}/: probe.csv summary.csv "
                       + " ".join(p.name for p in paths)))
    write_html_report(report_html, out_dir)


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
        doc = (getattr(fn.fn, "__doc__", None) or "").strip().splitlines()
        table.add_row(Text(name), Text(", ".join(sorted(a for a, t in aliases.items() if t == name))),
                      Text(doc[0] if doc else ""))
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

    def run_end(self, init, seed, diverged, reason=None):
        self.progress.advance(self.total)
        if diverged:
            self.progress.console.print(Text(f"depth {self.depth}: {init} seed {seed} diverged: {reason}",
                                             style="yellow"))


@app.command()
def models():
    """List the model zoo: name, what it is, parameters with defaults, input layout, what --depths varies."""
    from initlab.models import get_model, list_models

    table = Table(title="initlab models (use as --model 'name(key=value,...)', or your own 'module:factory')")
    for col in ("model", "input", "depth sweeps", "parameters (defaults)", "what it is"):
        table.add_column(col, overflow="fold")
    for name in list_models():
        e = get_model(name)
        params = ", ".join(f"{k}={v}" for k, v in e.defaults.items())
        table.add_row(Text(name), e.layout, e.depth_param, Text(params), Text(e.summary))
    console.print(table)


def depth_table(result) -> Table:
    net = f"width {result.width}, {result.activation}" if result.model is None else result.model
    table = Table(title=escape(f"{result.dataset}: final test accuracy vs depth ({net}, {result.epochs} epochs, {result.seeds} "
                               f"seed{'s' if result.seeds > 1 else ''})"),
                  caption="div.: runs diverged (not in the mean); (chance): no better than the majority class")
    table.add_column("init")
    for d in result.depths:
        table.add_column(f"depth {d}", justify="right")
    s = result.summary.set_index(["init", "depth"])
    for init in result.inits:
        cells = []
        for d in result.depths:
            r = s.loc[(init, d)]
            cell = fmt(r["final_test_acc_mean"], 3)
            if r["done"] > 1:
                cell += f" ± {fmt(r['final_test_acc_std'], 3)}"
            if r["at_chance"]:
                cell += " (chance)"
            if r["diverged"]:
                cell += f" ({int(r['diverged'])}/{int(r['runs'])} div.)"
            cells.append(cell)
        table.add_row(Text(init), *cells)
    return table


@app.command()
def depth(
    depths: str = typer.Option("2,5,10,20,30", help="Comma-separated depths: hidden layers of the MLP, or the "
                                                    "--model's depth parameter (conv layers, residual blocks)."),
    inits: str = typer.Option("zero,random,xavier,he", help="Comma-separated schemes (see `initlab schemes`)."),
    dataset: str = typer.Option("digits", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files."),
    width: Optional[int] = typer.Option(None, help="Units in every hidden layer of the MLP (default 64)."),
    activation: Optional[str] = typer.Option(None, help="MLP activation (default relu): relu, leaky_relu, tanh, "
                                                        "sigmoid, selu, elu, gelu, silu, linear"),
    model: Optional[str] = typer.Option(None, help="Sweep a zoo model instead of the MLP, e.g. 'cnn(channels=16)' or "
                                                   "'resnet(norm=none)'; depth sets its depth parameter (`initlab models`)."),
    epochs: int = typer.Option(10, help="Training epochs per run."),
    seeds: int = typer.Option(1, help="Runs per init and depth."),
    lr: float = typer.Option(0.01, help="Learning rate."),
    optimizer: str = typer.Option("sgd", help="sgd | adam"),
    momentum: float = typer.Option(0.0, help="SGD momentum."),
    batch_size: int = typer.Option(64, help="Minibatch size."),
    log_x: bool = typer.Option(True, help="Log-scale depth axis in depth_acc.png."),
    threads: int = typer.Option(1, help="torch CPU threads; small MLPs run fastest on 1."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    diverge_loss: float = typer.Option(1000.0, help="Divergence bound: end-of-epoch test loss > DIVERGE_LOSS × ln(classes)."),
    out: str = typer.Option("runs/depth", help="Output folder: depth_XX/ per depth, depth_*.csv, depth_acc.png. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier depth sweep in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
    resume: bool = typer.Option(False, help="Continue an interrupted depth sweep in --out (same options)."),
    store: Optional[str] = typer.Option(None, "--store", help="Also commit every depth's finished runs to this SQLite "
                                        "run store (see `initlab runs`)."),
    tensorboard: Optional[str] = typer.Option(None, "--tensorboard", help="Also export TensorBoard runs after the "
                                              "sweep: DIR/depth_XX/<init>/seed<k>, as compare --tensorboard. "
                                              "Needs: pip install 'initlab[tensorboard]'."),
):
    """Train every init at several depths: where does each one stop training? (He et al. 2015, 30 layers)."""
    import torch

    from initlab.experiment import CompareSpec
    from initlab.store import check_out_dir
    from initlab.sweep import depth_sweep, parse_depths
    from initlab.train import TrainConfig

    try:
        depth_list = parse_depths(depths)
        if model is not None and (width is not None or activation is not None):
            raise ValueError("--width and --activation have no effect with --model; give them in the model spec, "
                             "e.g. --model 'cnn(channels=16,activation=tanh)'")
        width = 64 if width is None else width
        activation = "relu" if activation is None else activation
        check_positive(width=width, epochs=epochs, seeds=seeds, batch_size=batch_size)
        check_threads(threads)
        resolve_hidden(None, max(depth_list), width)
        zoo = None
        if model is not None:
            from initlab.models import depth_param, is_factory_spec, parse_model

            if is_factory_spec(model):
                raise ValueError(f"--model for depth must be a zoo model, whose depth parameter is known "
                                 f"(see `initlab models`), got {model!r}")
            zoo = parse_model(model)
            zoo = str(zoo.with_params(**{depth_param(zoo): max(depth_list)}))
        spec = CompareSpec(inits=split_top_level(inits, "--inits"), dataset=dataset,
                           data_dir=None if data_dir is None else str(data_dir),
                           hidden=(width,) if zoo is None else (128,), activation=activation if zoo is None else "relu",
                           seeds=seeds, device=device, model=zoo,
                           train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                                             optimizer=optimizer, diverge_loss=diverge_loss))
        check_out_dir(out, "depth", overwrite=overwrite, resume=resume)
        if tensorboard is not None:  # before any training: a missing package or a used folder is one line now
            from initlab import tensorboard as tb

            tb.require()
            for d in depth_list:
                tb.check_logdir(Path(tensorboard) / f"depth_{d:02d}", spec.inits, spec.run_seeds)
        if store is not None:  # a sweep the store cannot express is refused before training
            from initlab.sweeps.record import compare_sweep

            compare_sweep(spec)
    except ValueError as e:
        fail(str(e))
    torch.set_num_threads(threads)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress:
            reporter = SweepReporter(progress, depth_list)
            result = depth_sweep(depth_list, spec.inits, dataset=dataset, width=width, activation=activation,
                                 epochs=epochs, seeds=seeds, lr=lr, out=out, batch_size=batch_size,
                                 optimizer=optimizer, momentum=momentum, device=device, log_x=log_x,
                                 data_dir=spec.data_dir, reporter=reporter, diverge_loss=diverge_loss,
                                 on_depth=lambda d, r: progress.advance(reporter.depth_task),
                                 overwrite=overwrite, resume=resume, model=model)
    except KeyboardInterrupt as e:
        interrupted(e, Path(out))
    except ValueError as e:  # includes DataError
        fail(str(e))
    console.print(depth_table(result))
    console.print(Text(f"{len(depth_list)} depths in {result.seconds:.1f} s; wrote {out}/: depth_XX/ "
                       "depth_metrics.csv depth_summary.csv sweep.json depth_acc.png"))
    if tensorboard is not None:
        try:
            with console.status(escape(f"writing TensorBoard runs to {tensorboard}…")):
                n = sum(len(tb.export(res, Path(tensorboard) / f"depth_{d:02d}")) for d, res in result.results.items())
        except (ValueError, OSError) as e:
            fail(f"TensorBoard export to '{tensorboard}' failed: {e}")
        console.print(Text(f"wrote {n} TensorBoard runs to {tensorboard}/ (tensorboard --logdir {tensorboard})"))
    if store is not None:
        from initlab.sweeps.record import record_compare

        try:
            counts = [record_compare(res, store) for res in result.results.values()]
        except (ValueError, OSError) as e:
            fail(f"recording into the run store '{store}' failed: {e}")
        console.print(Text(f"run store {store}: {sum(c['recorded'] for c in counts)} runs recorded, "
                           f"{sum(c['kept'] for c in counts)} already there"))
    write_html_report(report_html, out)


def build_zoo_audit_model(spec: str, in_shape, num_classes: int, batch: int):
    """A zoo model other than ``mlp`` for inputs of ``in_shape`` ((C, H, W)), after checking on the
    ``meta`` device that it and ``batch`` examples' activations fit in free memory."""
    from initlab.memory import available_bytes, format_bytes, module_footprint
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
    from initlab.audit import check_mlp_memory
    from initlab.diagnostics import build_user_model
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


@app.command()
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

    from initlab.audit import audit as run_audit
    from initlab.audit import plot_audit
    from initlab.data import load_dataset
    from initlab.diagnostics import model_inputs
    from initlab.models import parse_int_list
    from initlab.schemes import parse_scheme_list
    from initlab.store import atomic_write_csv, check_out_dir, claim_out_dir
    from initlab.train import MAX_INT

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
        jac = "—" if r.jac_mean_sq != r.jac_mean_sq else f"{_sci(r.jac_mean_sq)} ({r.jac_decades:.1f})"
        table.add_row(Text(r.scheme + (" *" if r.recommended else "")), _sci(r.forward_ratio), _sci(r.grad_ratio),
                      jac, Text(r.flags or "healthy", style="green" if not r.flags else "yellow"))
    console.print(table)
    console.print(Text(f"recommended: {report.recommended}: {report.reason}"))
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(out_dir))  # rich drops control chars
    console.print(Text(f"wrote {shown}/: summary.csv audit.csv " + " ".join(p.name for p in paths)))
    write_html_report(report_html, out_dir)


VERDICT_STYLE = {"confirmed": "green", "refuted": "red", "depends": "yellow"}


@app.command()
def claims(
    only: Optional[str] = typer.Option(None, help="Comma-separated claim ids to run (default: all). See --list."),
    out: str = typer.Option("runs/claims", help="Output folder: claims.json, claims.md, PNGs. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier claims result in --out (its files only)."),
    report_html: bool = typer.Option(False, "--report", help=REPORT_HELP),
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
    from initlab.store import check_out_dir

    try:
        ids = None if only is None else split_top_level(only, "--only")
        for i in ids or ():
            get_claim(i)
        check_threads(threads)
        check_out_dir(out, "claims", overwrite=overwrite)
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
            status.update(escape(f"checked {claim.id}: {res.verdict} ({res.seconds:.1f} s)"))
            verdict = f"[{VERDICT_STYLE[res.verdict]}]{res.verdict}[/]" + (f" ({res.condition})" if res.condition else "")
            table.add_row(claim.id, escape(claim.short), verdict, escape(res.summary))

        try:
            results = run_claims(ids, out=out, quick=quick, on_result=done, overwrite=overwrite)
        except KeyboardInterrupt as e:
            code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
            err_console.print(Text(f"{'terminated' if code == EXIT_SIGTERM else 'interrupted'}: "
                                   f"{len(table.rows)} of {n} claims finished; they are in {out}/claims.json"))
            raise typer.Exit(code)
        except ValueError as e:
            fail(str(e))
    console.print(table)
    total = sum(r.seconds for r in results)
    console.print(Text(f"{len(results)} claims in {total:.1f} s; wrote {out}/: claims.json claims.md and plots"))
    write_html_report(report_html, out)


@app.command()
def coordcheck(
    model: str = typer.Option("mlp(depth=2)", help="Zoo mlp or transformer spec without width, e.g. 'transformer(depth=2,heads=4)'."),
    widths: str = typer.Option("64,128,256,512,1024,2048", help="Comma-separated widths (at least two)."),
    base_width: Optional[int] = typer.Option(None, help="μP base width (default: the smallest width)."),
    steps: int = typer.Option(3, help="Optimizer steps on one fixed batch."),
    seeds: int = typer.Option(3, help="Seeds per width (the plot shows their mean)."),
    lr: float = typer.Option(0.01, help="Global learning rate (μP: at the base width; per-layer multipliers on top)."),
    optimizer: str = typer.Option("adam", help="adam | sgd"),
    batch_size: int = typer.Option(64, help="Size of the fixed batch."),
    dataset: str = typer.Option("digits", help="digits (bundled, offline) | mnist | fashion-mnist"),
    readout_zero: bool = typer.Option(False, "--readout-zero", help="μP: start the readout at zero."),
    threads: int = typer.Option(1, help="torch CPU threads."),
    out: str = typer.Option("runs/coordcheck", help="Output folder: coords.csv, growth.csv, coordcheck_sp.png, "
                                                    "coordcheck_mup.png. " + OUT_HELP),
    overwrite: bool = typer.Option(False, help="Replace the earlier result in --out (its files only)."),
):
    """μP's coordinate check: activation size per layer vs width after a few steps, SP vs μP (Tensor Programs V)."""
    import torch

    from initlab.data import load_dataset
    from initlab.mup import check_coord_args, output_layer, run_coord_check
    from initlab.store import check_out_dir, write_error

    try:
        check_threads(threads)
        ws = []
        for item in split_top_level(widths, "--widths"):
            try:
                ws.append(int(item))
            except ValueError:
                raise ValueError(f"--widths must be comma-separated integers, got {item!r}") from None
        check_out_dir(out, "coordcheck", overwrite=overwrite)
        check_coord_args(model=model, widths=tuple(ws), base_width=base_width, steps=steps, seeds=seeds, lr=lr,
                         optimizer=optimizer, batch_size=batch_size)
        torch.set_num_threads(threads)
        with console.status(escape(f"loading {dataset}…")):
            data = load_dataset(dataset)
        kwargs = dict(model=model, widths=tuple(ws), base_width=base_width, steps=steps, seeds=seeds, lr=lr,
                      optimizer=optimizer, batch_size=batch_size, dataset=dataset, readout_zero=readout_zero)
        coords, growth = run_coord_check(out, overwrite=overwrite, data=data, **kwargs)
    except ValueError as e:  # includes DataError
        fail(str(e))
    except OSError as e:
        fail(str(write_error(e)))
    head = output_layer(coords)
    table = Table(title=f"output ({head}) l1 at step {int(coords['step'].max())}: width {min(ws)} → {max(ws)}")
    for col in ("parametrization", "l1 at min width", "l1 at max width", "ratio"):
        table.add_column(col)
    for _, r in growth[growth["layer"] == head].iterrows():
        table.add_row(r["parametrization"], fmt(r["l1_min_width"]), fmt(r["l1_max_width"]), fmt(r["ratio"]))
    console.print(table)
    console.print(Text(f"wrote {out}/: config.json coords.csv growth.csv coordcheck_sp.png coordcheck_mup.png"))


@app.command()
def report(
    path: str = typer.Argument(..., help="A result folder of compare, depth, probe, claims or audit."),
    out: Optional[str] = typer.Option(None, help="HTML file to write (default: PATH/report.html). An existing "
                                                 "file is replaced only if it is an initlab report."),
):
    """One self-contained HTML page for a result: question, reading, tables, interactive charts, raw-file links."""
    from initlab.report import write_report

    try:
        written = write_report(path, out)
    except ValueError as e:
        fail(str(e))
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(written))
    console.print(Text(f"wrote {shown} (self-contained: open it in any browser, no network needed)"))


# sweep, runs (list|show|export|best|heatmap), phase: in initlab.sweeps.commands, on this app
from initlab.sweeps.commands import register as _register_sweep_commands  # noqa: E402

_register_sweep_commands(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Usage errors (bad option value, unknown option) print one line, exit 2."""
    import os

    if os.environ.get("INITLAB_MALLOC", "").lower() != "system":
        from initlab.memory import keep_freed_memory

        keep_freed_memory()  # training re-allocates the same tensors every step: keep the pages
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave signals to the host
        previous = None
    try:
        rv = app(args=argv, prog_name="initlab", standalone_mode=False)
    except KeyboardInterrupt as e:  # a command without its own clean-up (probe, schemes): nothing half-written
        term = isinstance(e, Terminated)
        err_console.print(Text("terminated" if term else "interrupted"))
        sys.exit(EXIT_SIGTERM if term else EXIT_SIGINT)
    except Exception as e:  # the CLI framework's usage errors carry a message and an exit code
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if not e.format_message().strip():  # bare `initlab`: help was printed, nothing went wrong
            sys.exit(0)
        name = getattr(getattr(e, "ctx", None), "command_path", "initlab")
        err_console.print(Text.assemble(("error: ", "bold red"), one_line(e.format_message()),
                                        f" (see '{name} --help')"), soft_wrap=True)
        sys.exit(e.exit_code)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
