"""``initlab sweep``, ``initlab runs list|show|export|best|heatmap`` and ``initlab phase``.

Registered on the main typer app by :func:`register` (called from :mod:`initlab.cli`), with its
conventions: user errors are one line on stderr and exit status 2, user text is never markup,
Ctrl-C/SIGTERM exit 130/143 after the store has marked this worker's runs ``interrupted``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab import store as files
from initlab.cli.common import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    Terminated,
    check_positive,
    check_threads,
    console,
    err_console,
    fail,
)
from initlab.experiments.progress import bars
from initlab.experiments.sweeps.phase import phase_spec, plot_phase
from initlab.experiments.sweeps.plan import make_plan
from initlab.experiments.sweeps.plots import plot_heatmap, plot_lr_sensitivity
from initlab.experiments.sweeps.progress import RichSweepReporter
from initlab.experiments.sweeps.run import BACKENDS, run_sweep
from initlab.experiments.sweeps.runstore import STATUSES, RunStore
from initlab.experiments.sweeps.select import best_lr, fixed_lr_table, paired_comparison
from initlab.experiments.sweeps.spec import KNOWN_SIZES, expand_range, load_spec, spec_from_options
from initlab.schemes import split_top_level
from initlab.training.memory import format_bytes

STORE_HELP = "SQLite run store (created if missing; several workers may share it)."
runs_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                       help="Read the run store: list sweeps and runs, show one, export, best lr, heat maps.")



def _values(text: Optional[str], what: str, kind) -> Optional[list]:
    """``"0.01,0.1"`` -> [0.01, 0.1] (``kind`` int/float/str); None stays None."""
    if text is None:
        return None

    items = split_top_level(text, what=f"--{what}")
    if kind is str:
        return items
    out = []
    for item in items:
        try:
            out.append(kind(item))
        except ValueError:
            raise ValueError(f"--{what}: {item!r} is not {'an integer' if kind is int else 'a number'}") from None
    return out


def _interrupted(e: KeyboardInterrupt, store: str) -> None:
    code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
    msg = "terminated" if code == EXIT_SIGTERM else "interrupted"
    result = getattr(e, "result", None)
    if result is not None:
        c = result.counts
        msg += (f": {c['done'] + c['diverged']} of {len(result.runs)} runs finished ({c['done']} done, "
                f"{c['diverged']} diverged), {c['interrupted']} interrupted, {c['queued']} not started; all in "
                f"{store}; rerun the same command to resume")
    err_console.print(Text(msg), soft_wrap=True)
    raise typer.Exit(code)


def _fmt(x, digits=3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def plan_table(plan) -> Table:
    t = plan.table()
    table = Table(title=escape(f"plan: {len(plan.runs)} runs in {len(t)} engine group{'s' if len(t) != 1 else ''}, "
                               f"{plan.model_epochs} model-epochs, ~{_duration(plan.seconds)}, peak memory "
                               f"~{format_bytes(plan.memory)}"),
                  caption=escape(f"a group trains as one batched computation (runs differ only in init, seed, lr, "
                                 f"momentum), in chunks of 'at once'; time: FLOPs / {plan.gflops:.0f} GFLOP/s "
                                 "measured × engine efficiency (rough, ±2×)"))
    for col in ("group", "model, data, training", "runs", "inits×lrs×seeds", "engine", "at once", "memory", "time"):
        table.add_column(col, justify="left" if col in ("model, data, training", "engine") else "right",
                         overflow="fold")
    for r in t.itertuples():
        mom = f"×{r.momenta}m" if r.momenta > 1 else ""
        engine = r.engine + (f" ({r.why})" if r.why else "")
        what = f"{r.model} · {r.dataset} · {r.optimizer} batch {r.batch_size} · {r.epochs} ep"
        table.add_row(str(r.group), Text(what), str(r.runs), f"{r.inits}×{r.lrs}{mom}×{r.seeds}", Text(engine),
                      f"{r.at_once}×{r.chunks}", format_bytes(r.memory), _duration(r.seconds))
    return table


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def best_tables(runs):
    """(best-lr table, paired table) as rich Tables, or None when lr does not vary / no validation."""
    if runs.empty or runs["lr"].nunique() < 2 or runs["final_val_acc"].isna().all():
        return None
    best = best_lr(runs)
    paired = paired_comparison(runs, best)
    ctx = [c for c in best.columns if c not in ("init", "best_lr", "val_mean", "val_std", "test_mean", "test_std",
                                                "seeds", "diverged", "at_edge", "lrs", "unfinished", "test_pick_lr")]
    t = Table(title="each init at its own best lr (chosen on validation accuracy, mean over seeds; reported on test)",
              caption="paired: test accuracy minus the reference's (the best on validation), same seeds; "
                      "edge: the best lr is the grid's smallest or largest (widen it)")
    for c in ctx + ["init", "best lr", "val acc", "test acc (mean ± std)", "vs reference (paired)", "wins",
                    "test would pick"]:
        t.add_column(c, justify="left" if c in ctx + ["init"] else "right", overflow="fold")
    p = paired.set_index(ctx + ["init"]) if ctx else paired.set_index("init")
    for r in best.to_dict(orient="records"):
        key = tuple(r[c] for c in ctx) + (r["init"],) if ctx else r["init"]
        q = p.loc[key]
        ref = q["reference"] == r["init"]
        d = round(float(q["diff_mean"]), 4) + 0.0  # + 0.0: no "-0.0000"
        diff = "reference" if ref else (f"{d:+.4f}" + (f" ± {q['diff_std']:.4f}" if q["pairs"] > 1 else ""))
        t.add_row(*[Text(str(r[c])) for c in ctx], Text(str(r["init"])),
                  f"{r['best_lr']:g}" + (" (edge)" if r["at_edge"] else ""), _fmt(r["val_mean"], 4),
                  _fmt(r["test_mean"], 4) + (f" ± {_fmt(r['test_std'], 4)}" if r["seeds"] > 1 else ""),
                  diff, "" if ref else f"{q['wins']}/{q['pairs']}", f"{r['test_pick_lr']:g}")
    return t


def sweep_cmd(
    spec_file: Optional[Path] = typer.Argument(None, help="A sweep spec (TOML); options below override its keys."),
    inits: Optional[str] = typer.Option(None, help="Init axis: comma-separated schemes, e.g. 'xavier,he,normal(std=0.05)'."),
    model: Optional[str] = typer.Option(None, help="Model axis: zoo specs ('cnn(channels=8)') or a 'module:factory'; default the MLP."),
    depth: Optional[str] = typer.Option(None, help="Depth axis: MLP hidden layers (or a zoo model's depth parameter), e.g. '1,2,4'."),
    width: Optional[str] = typer.Option(None, help="Width axis (MLP), e.g. '64,128'."),
    activation: Optional[str] = typer.Option(None, help="Activation axis (MLP), e.g. 'relu,tanh'."),
    optimizer: Optional[str] = typer.Option(None, help="Optimizer axis: sgd, adam."),
    lr: Optional[str] = typer.Option(None, help="Learning-rate axis, e.g. '0.001,0.01,0.1'."),
    momentum: Optional[str] = typer.Option(None, help="SGD momentum axis, e.g. '0,0.9'."),
    batch_size: Optional[str] = typer.Option(None, help="Batch-size axis."),
    epochs: Optional[str] = typer.Option(None, help="Epochs axis."),
    dataset: Optional[str] = typer.Option(None, help="Dataset axis: digits, mnist, fashion-mnist."),
    seeds: Optional[str] = typer.Option(None, help="A count ('3': seeds 0,1,2) or a list ('0,5,7')."),
    zip_axes: Optional[str] = typer.Option(None, "--zip", help="Axes that move together, e.g. 'depth+width' (groups separated by ',')."),
    name: Optional[str] = typer.Option(None, help="Sweep name (for listings)."),
    val_fraction: Optional[float] = typer.Option(None, help="Validation split carved from train, per class (default 0.1; 0: none)."),
    val_seed: Optional[int] = typer.Option(None, help="Seed fixing the validation split."),
    normalize: Optional[str] = typer.Option(None, help="seed | standardize | none"),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the IDX files (not for digits)."),
    train_eval: Optional[str] = typer.Option(None, help="Training-set accuracy: none | final | every (epoch)."),
    probe: Optional[bool] = typer.Option(None, help="Per-layer statistics at init and after the last epoch."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    engine: Optional[str] = typer.Option(None, help="batched | single (same results)."),
    store: str = typer.Option("runs/sweeps.db", help=STORE_HELP),
    dry_run: bool = typer.Option(False, help="Print the plan (runs, engine groups, time, memory); run nothing."),
    max_group: Optional[int] = typer.Option(None, help="Most models trained at once (default: what fits 1 GiB)."),
    threads: int = typer.Option(1, help="torch CPU threads; batched small models run fastest on 1 per worker."),
    backend: str = typer.Option("local", help="local: this process | ray: one Ray task per engine group "
                                             "(pip install 'initlab[ray]'), results committed here."),
    address: Optional[str] = typer.Option(None, help="With --backend ray: the cluster to join (default: start a local one)."),
    plots: Optional[Path] = typer.Option(None, help="Folder for lr_sensitivity.png (when lr varies)."),
):
    """Run a grid of experiments into the run store; rerun the same command to resume after a crash."""
    import torch

    try:
        axes = {"inits": _values(inits, "inits", str), "model": _values(model, "model", str),
                "depth": _values(depth, "depth", int), "width": _values(width, "width", int),
                "activation": _values(activation, "activation", str), "optimizer": _values(optimizer, "optimizer", str),
                "lr": _values(lr, "lr", float), "momentum": _values(momentum, "momentum", float),
                "batch_size": _values(batch_size, "batch-size", int), "epochs": _values(epochs, "epochs", int),
                "dataset": _values(dataset, "dataset", str)}
        if seeds is not None:
            s = _values(seeds, "seeds", int)
            axes["seeds" if len(s) == 1 and "," not in seeds else "seed"] = s[0] if len(s) == 1 and "," not in seeds else s
        options = {"name": name, "val_fraction": val_fraction, "val_seed": val_seed, "normalize": normalize,
                   "data_dir": data_dir, "train_eval": train_eval, "probe": probe, "device": device, "engine": engine}
        if zip_axes is not None:
            options["zip"] = [[a.strip() for a in g.split("+")] for g in zip_axes.split(",")]
        given = {k: v for k, v in {**axes, **options}.items() if v is not None}
        if spec_file is not None:
            spec = load_spec(spec_file, given)
        else:
            spec = spec_from_options(given)
        check_threads(threads)

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
        if address is not None and backend != "ray":
            raise ValueError("--address has no effect without --backend ray; drop it or add --backend ray")
        if max_group is not None and max_group <= 0:
            raise ValueError(f"--max-group must be a positive integer, got {max_group}")
        torch.set_num_threads(threads)
        plan = make_plan(spec, max_group=max_group)
    except ValueError as e:
        fail(str(e))
    if dry_run:
        console.print(plan_table(plan))
        console.print(Text(f"dry run: nothing trained, nothing written (store would be {store})"))
        return
    progress = bars(console)
    try:
        with progress:
            result = run_sweep(spec, store, reporter=RichSweepReporter(progress), plan=plan, max_group=max_group,
                               backend=backend, address=address)
    except KeyboardInterrupt as e:
        _interrupted(e, store)
    except ValueError as e:
        fail(str(e))
    c = result.counts
    console.print(Text(f"{spec.name}: {len(result.runs)} runs: {c['done']} done, {c['diverged']} diverged, "
                           f"{c['failed']} failed, {c['interrupted'] + c['queued'] + c['running']} unfinished; "
                           f"{result.trained} trained now in {result.seconds:.1f} s; store {store}"))
    for err in dict.fromkeys(result.errors):
        err_console.print(Text(f"failed: {err}", style="red"), soft_wrap=True)
    table = best_tables(result.runs)
    if table is not None:
        console.print(table)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            path = plot_lr_sensitivity(result.runs, plots / "lr_sensitivity.png", title=spec.name)
            console.print(Text(f"wrote {path}"))
    if c["failed"]:
        raise typer.Exit(1)


def _open(store: str):
    if not Path(store).exists():
        raise ValueError(f"no run store at '{store}'; run `initlab sweep` first or pass --store")
    return RunStore(store)


@runs_app.command("list")
def runs_list(
    sweep: Optional[str] = typer.Option(None, help="A sweep (name, id or hash): list its runs. Default: list the sweeps."),
    status: Optional[str] = typer.Option(None, help="Only runs with these statuses, e.g. 'failed,interrupted'."),
    store: str = typer.Option("runs/sweeps.db", help=STORE_HELP),
    limit: int = typer.Option(50, help="Most runs shown."),
):
    """The sweeps in the store with their run counts, or the runs of one sweep."""
    try:
        st = _open(store)
        if sweep is None and status is None:
            frame = st.sweeps()
            table = Table(title=escape(f"sweeps in {store}"))
            for col in ("id", "name", "hash", "runs", "done", "diverged", "failed", "interrupted", "running", "queued"):
                table.add_column(col, justify="left" if col in ("name", "hash") else "right")
            for r in frame.itertuples():
                table.add_row(str(r.id), Text(r.name), r.hash, *(str(int(getattr(r, c) or 0)) for c in
                              ("runs", "done", "diverged", "failed", "interrupted", "running", "queued")))
            console.print(table)
            return
        sw = st.find_sweep(sweep) if sweep is not None else None
        statuses = _values(status, "status", str)
        if statuses:
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise ValueError(f"unknown status {bad[0]!r}; choose from: {', '.join(STATUSES)}")
        frame = st.runs(sw["id"] if sw else None, statuses)
    except ValueError as e:
        fail(str(e))
    table = Table(title=escape(f"runs of {sw['name'] if sw else 'all sweeps'} ({len(frame)})"))
    cols = ["id", "hash", "init", "lr", "seed", "model", "dataset", "status", "epochs_done", "final_val_acc",
            "final_test_acc", "attempts"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in frame.head(limit).to_dict(orient="records"):
        table.add_row(*(Text(_fmt(r[c], 4) if c.startswith("final_") else str(r[c])) for c in cols))
    console.print(table)
    if len(frame) > limit:
        console.print(Text(f"… {len(frame) - limit} more; use --limit or `initlab runs export`"))


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="Run id or hash (a unique prefix)."),
              store: str = typer.Option("runs/sweeps.db", help=STORE_HELP)):
    """One run: its parameters, status, timings and every epoch."""
    try:
        info = _open(store).run(run)
    except ValueError as e:
        fail(str(e))
    table = Table(title=escape(f"run {info['id']} ({info['hash']}): {info['status']}"), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for k, v in info["params"].items():
        table.add_row(k, Text(str(v)))
    for k in ("status", "attempts", "engine", "epochs_done", "final_val_acc", "final_test_acc", "final_train_acc",
              "diverged_epoch", "diverged_step", "diverge_reason", "error", "seconds", "worker", "sweeps"):
        v = info.get(k)
        table.add_row(k, Text(_fmt(v, 4) if isinstance(v, float) else str(v)))
    console.print(table)
    ep = info["epochs"]
    if len(ep):
        et = Table(title="epochs")
        cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "diverged"]
        for c in cols:
            et.add_column(c, justify="right")
        for r in ep.to_dict(orient="records"):
            et.add_row(*(str(r[c]) if c in ("epoch", "diverged") else _fmt(r[c], 4) for c in cols))
        console.print(et)


@runs_app.command("export")
def runs_export(
    out: Path = typer.Option(..., help="File to write: .csv, or .parquet when pyarrow is installed."),
    sweep: Optional[str] = typer.Option(None, help="A sweep (name, id or hash); default: every run in the store."),
    epochs: bool = typer.Option(False, help="One row per run per epoch (run parameters repeated) instead of per run."),
    store: str = typer.Option("runs/sweeps.db", help=STORE_HELP),
):
    """Export runs (or epochs) with their parameters as columns."""
    try:
        st = _open(store)
        sw = st.find_sweep(sweep) if sweep is not None else None
        frame = st.runs(sw["id"] if sw else None)
        if epochs and len(frame):
            ep = st.epochs(sw["id"] if sw else None)
            frame = frame.drop(columns=[c for c in frame.columns if c.startswith("final_")]).merge(
                ep.drop(columns=["hash"]), on="id")
        suffix = out.suffix.lower()
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ValueError("Parquet needs pyarrow (pip install pyarrow); or write .csv") from None
            import io

            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            files.atomic_write_bytes(out, buf.getvalue())
        elif suffix == ".csv":
            files.atomic_write_csv(out, frame)
        else:
            raise ValueError(f"unknown export format {out.suffix or '(none)'!r}; choose from: .csv, .parquet")
    except OSError as e:
        fail(f"cannot write '{out}': {e.strerror or e}")
    except ValueError as e:
        fail(str(e))
    console.print(Text(f"wrote {len(frame)} rows to {out}"))


@runs_app.command("best")
def runs_best(
    sweep: Optional[str] = typer.Option(None, help="A sweep (name, id or hash); default: the latest."),
    plot: Optional[Path] = typer.Option(None, help="Write the lr-sensitivity plot (validation accuracy vs lr) here."),
    fixed_lr: Optional[float] = typer.Option(None, help="Also show test accuracy at this one lr (the fixed-lr protocol)."),
    store: str = typer.Option("runs/sweeps.db", help=STORE_HELP),
):
    """Best lr per init chosen on validation, test accuracy there, paired comparison at each init's best lr."""
    try:
        st = _open(store)
        sw = st.find_sweep(sweep)
        runs = st.runs(sw["id"])
        if runs.empty or runs["lr"].nunique() < 2:
            raise ValueError(f"sweep {sw['name']!r} has one lr; a best lr needs an lr axis")
        if runs["final_val_acc"].isna().all():
            raise ValueError(f"sweep {sw['name']!r} has no validation metrics (val_fraction = 0, or no run finished)")
        table = best_tables(runs)
        fixed = None
        if fixed_lr is not None:
            fixed = fixed_lr_table(runs, fixed_lr)
        if plot is not None:
            plot_lr_sensitivity(runs, plot, title=sw["name"])
    except ValueError as e:
        fail(str(e))
    console.print(table)
    if fixed is not None:
        t = Table(title=f"the same inits at one fixed lr {fixed_lr:g} (test accuracy)")
        for c in ("init", "test acc", "val acc", "runs"):
            t.add_column(c, justify="left" if c == "init" else "right")
        for r in fixed.to_dict(orient="records"):
            t.add_row(Text(str(r["init"])), _fmt(r["test_mean"], 4) + (f" ± {_fmt(r['test_std'], 4)}" if r["runs"] > 1 else ""),
                      _fmt(r["val_mean"], 4), str(r["runs"]))
        console.print(t)
    if plot is not None:
        console.print(Text(f"wrote {plot}"))


@runs_app.command("heatmap")
def runs_heatmap(
    x: str = typer.Option(..., help="Column for the x axis: an axis (lr, depth, width, init, ...) or init.<param>."),
    y: str = typer.Option(..., help="Column for the y axis."),
    out: Path = typer.Option(..., help="PNG file to write."),
    metric: str = typer.Option("final_val_acc", help="final_val_acc, final_test_acc, final_train_acc, final_*_loss, ..."),
    agg: str = typer.Option("mean", help="Aggregate over the runs of a cell: mean, median, min, max."),
    sweep: Optional[str] = typer.Option(None, help="A sweep (name, id or hash); default: the latest."),
    store: str = typer.Option("runs/sweeps.db", help=STORE_HELP),
):
    """A heat map of any metric over any two sweep axes (mean over the other axes' runs)."""
    try:
        if agg not in ("mean", "median", "min", "max"):
            raise ValueError(f"unknown --agg {agg!r}; choose from: mean, median, min, max")
        st = _open(store)
        sw = st.find_sweep(sweep)

        table = plot_heatmap(st.runs(sw["id"]), x, y, metric, out, agg=agg, title=f"{sw['name']}: {metric} ({agg})")
    except OSError as e:
        fail(f"cannot write '{out}': {e.strerror or e}")
    except ValueError as e:
        fail(str(e))
    console.print(Text(f"wrote {out} ({table.shape[0]}×{table.shape[1]} cells)"))


def phase_cmd(
    sigma_w2: str = typer.Option("1:4:13", help="σ_w² values: 'start:stop:num' (evenly spaced) or a list '1,1.5,2'."),
    depths: str = typer.Option("10,20,30,40,50,60,70,80", help="Depths (hidden layers)."),
    sigma_b2: float = typer.Option(0.05, help="Bias variance σ_b²."),
    width: int = typer.Option(64, help="Hidden width."),
    dataset: str = typer.Option("digits", help="digits | mnist | fashion-mnist"),
    steps: int = typer.Option(300, help="SGD steps (rounded up to whole epochs)."),
    lr: float = typer.Option(0.01, help="SGD learning rate."),
    batch_size: int = typer.Option(32, help="Minibatch size."),
    seeds: int = typer.Option(1, help="Seeds per cell."),
    store: str = typer.Option("runs/sweeps.db", help=STORE_HELP),
    out: Path = typer.Option(Path("runs/phase.png"), help="The heat map (PNG)."),
    threads: int = typer.Option(1, help="torch CPU threads."),
    dry_run: bool = typer.Option(False, help="Print the plan only."),
):
    """Trainability phase diagram (Schoenholz et al. 2017): tanh MLP training accuracy over (σ_w², depth) vs 6 ξ_c."""
    import torch

    try:
        if ":" in sigma_w2:
            parts = sigma_w2.split(":")
            if len(parts) != 3:
                raise ValueError(f"--sigma-w2 range is 'start:stop:num', got {sigma_w2!r}")
            try:
                values = expand_range("--sigma-w2", {"start": float(parts[0]), "stop": float(parts[1]),
                                                     "num": int(parts[2])})
            except ValueError:
                raise ValueError(f"--sigma-w2 range is 'start:stop:num' with numbers, got {sigma_w2!r}") from None
        else:
            values = _values(sigma_w2, "sigma-w2", float)
        if any(not (math.isfinite(v) and v > 0) for v in values):
            raise ValueError(f"--sigma-w2 values must be positive numbers, got {sigma_w2!r}")
        check_positive(width=width, steps=steps, batch_size=batch_size, seeds=seeds)
        check_threads(threads)
        spec = phase_spec(values, _values(depths, "depths", int), sigma_b2=sigma_b2, width=width, dataset=dataset,
                          steps=steps, lr=lr, batch_size=batch_size, seeds=seeds)
        torch.set_num_threads(threads)
        plan = make_plan(spec)
    except ValueError as e:
        fail(str(e))
    if dry_run:
        console.print(plan_table(plan))
        return
    progress = bars(console)
    try:
        with progress:
            result = run_sweep(spec, store, reporter=RichSweepReporter(progress), plan=plan)
    except KeyboardInterrupt as e:
        _interrupted(e, store)
    except ValueError as e:
        fail(str(e))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        first = spec.runs()[0]
        n_train = KNOWN_SIZES[dataset][0]
        total = first["epochs"] * -(-n_train // batch_size)
        table = plot_phase(result.runs, out, title=f"tanh MLP, width {width}, {dataset}: final training accuracy after "
                                                   f"{total} SGD steps (lr {lr:g}, batch {batch_size})")
    except OSError as e:
        fail(f"cannot write '{out}': {e.strerror or e}")
    except ValueError as e:
        fail(str(e))
    grid = table.cells.pivot(index="depth", columns="sigma_w2", values="train_acc")
    t = Table(title=escape(f"final training accuracy, % ({dataset}, width {width}, {spec.runs()[0]['epochs']} "
                           "epochs); * = depth < 6 ξ_c"), padding=(0, 0, 0, 1), box=None)
    t.add_column("depth", justify="right")
    for s in grid.columns:
        t.add_column(f"{s:g}", justify="right")
    pred = table.cells.set_index(["depth", "sigma_w2"])["predicted"]
    for d, row in grid.iterrows():
        t.add_row(str(d), *(("—" if math.isnan(v) else f"{100 * v:.0f}") + ("*" if pred.get((d, s), False) else " ")
                            for s, v in row.items()))
    console.print(t)
    console.print(Text(f"trains (≥ {table.threshold:.2f}) agrees with depth < 6 ξ_c in {table.agreement:.0%} of "
                           f"{len(table.cells)} cells; {result.seconds:.0f} s; wrote {out}; runs in {store}"))


def register(app: typer.Typer) -> None:
    """Add ``sweep``, ``runs`` and ``phase`` to the ``initlab`` app."""
    app.command("sweep")(sweep_cmd)
    app.add_typer(runs_app, name="runs")
    app.command("phase")(phase_cmd)
