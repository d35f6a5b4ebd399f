"""``initlab depth``: a depth sweep of a comparison."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.cli.common import (
    OUT_HELP,
    REPORT_HELP,
    check_positive,
    check_threads,
    console,
    fail,
    fmt,
    interrupted,
    resolve_hidden,
    split_top_level,
    write_html_report,
)
from initlab.core.activations import ACTIVATIONS
from initlab.experiments.compare import CompareSpec
from initlab.experiments.depth import depth_sweep, parse_depths
from initlab.experiments.progress import DepthReporter, bars
from initlab.experiments.sweeps.record import compare_sweep, record_compare
from initlab.models import depth_param, is_factory_spec, parse_model
from initlab.store import check_out_dir, out_path
from initlab.trackers import tensorboard as tb
from initlab.training.loop import TrainConfig


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


def depth(
    depths: str = typer.Option("2,5,10,20,30", help="Comma-separated depths: hidden layers of the MLP, or the "
                                                    "--model's depth parameter (conv layers, residual blocks)."),
    inits: str = typer.Option("zero,random,xavier,he", help="Comma-separated schemes (see `initlab schemes`)."),
    dataset: str = typer.Option("digits", help="digits (bundled, offline) | mnist | fashion-mnist"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the IDX files."),
    width: Optional[int] = typer.Option(None, help="Units in every hidden layer of the MLP (default 64)."),
    activation: Optional[str] = typer.Option(None, help="MLP activation (default relu): "
                                                        + ", ".join(ACTIVATIONS)),
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

            tb.require()
            for d in depth_list:
                tb.check_logdir(Path(tensorboard) / f"depth_{d:02d}", spec.inits, spec.run_seeds)
        if store is not None:  # a sweep the store cannot express is refused before training

            compare_sweep(spec)
    except ValueError as e:
        fail(str(e))
    torch.set_num_threads(threads)
    progress = bars(console)
    try:
        with progress:
            reporter = DepthReporter(progress, depth_list)
            result = depth_sweep(depth_list, spec.inits, dataset=dataset, width=width, activation=activation,
                                 epochs=epochs, seeds=seeds, lr=lr, out=out, batch_size=batch_size,
                                 optimizer=optimizer, momentum=momentum, device=device, log_x=log_x,
                                 data_dir=spec.data_dir, reporter=reporter, diverge_loss=diverge_loss,
                                 on_depth=reporter.depth_done,
                                 overwrite=overwrite, resume=resume, model=model)
    except KeyboardInterrupt as e:
        interrupted(e, out_path(out))
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
        try:
            counts = [record_compare(res, store) for res in result.results.values()]
        except (ValueError, OSError) as e:
            fail(f"recording into the run store '{store}' failed: {e}")
        console.print(Text(f"run store {store}: {sum(c['recorded'] for c in counts)} runs recorded, "
                           f"{sum(c['kept'] for c in counts)} already there"))
    write_html_report(report_html, out)
