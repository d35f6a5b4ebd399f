"""``initlab depth``: a depth sweep of a comparison."""
from __future__ import annotations

import torch
from rich.markup import escape
from typer import Option

from initlab.cli.common import (BatchSize, DataDir, Dataset, Device, DivergeLoss, Epochs, Inits, Lr, Momentum, Optimizer,
                                Overwrite, Report, Store, Threads, call, console, out_option, say, show, with_bars,
                                write_html_report)
from initlab.core.activations import ACTIVATIONS
from initlab.experiments.depth import depth_sweep
from initlab.experiments.options import depth_request
from initlab.experiments.progress import DepthReporter, interrupted_text
from initlab.experiments.sweeps.record import record_results
from initlab.report.tables import depth_summary
from initlab.store import out_path
from initlab.trackers.exports import check_trackers, export_tensorboard


def depth(
    depths: str = Option("2,5,10,20,30", help="Comma-separated depths: hidden layers of the MLP, or the --model's "
                         "depth parameter (conv layers, residual blocks)."),
    inits: Inits = "zero,random,xavier,he", dataset: Dataset = "digits", data_dir: DataDir = None,
    width: int | None = Option(None, help="Units in every hidden layer of the MLP (default 64)."),
    activation: str | None = Option(None, help="MLP activation (default relu): " + ", ".join(ACTIVATIONS)),
    model: str | None = Option(None, help="Sweep a zoo model instead of the MLP, e.g. 'cnn(channels=16)' or "
                               "'resnet(norm=none)'; depth sets its depth parameter (`initlab models`)."),
    epochs: Epochs = 10, seeds: int = Option(1, help="Runs per init and depth."), lr: Lr = 0.01,
    optimizer: Optimizer = "sgd", momentum: Momentum = 0.0, batch_size: BatchSize = 64,
    log_x: bool = Option(True, help="Log-scale depth axis in depth_acc.png."), threads: Threads = 1,
    device: Device = "auto", diverge_loss: DivergeLoss = 1000.0,
    out: out_option("Output folder: depth_XX/ per depth, depth_*.csv, depth_acc.png.") = "runs/depth",
    overwrite: Overwrite = False, report_html: Report = False,
    resume: bool = Option(False, help="Continue an interrupted depth sweep in --out (same options)."), store: Store = None,
    tensorboard: str | None = Option(None, "--tensorboard", help="Also export TensorBoard runs after the sweep: "
                                     "DIR/depth_XX/<init>/seed<k>, as compare --tensorboard. Needs: pip install "
                                     "'initlab[tensorboard]'."),
):
    """Train every init at several depths: where does each one stop training? (He et al. 2015, 30 layers)."""
    req = call(depth_request, locals())
    check_trackers(req.spec.inits, req.spec.run_seeds, tensorboard=tensorboard, depths=req.depths)
    torch.set_num_threads(threads)
    result = with_bars(lambda bars: depth_sweep(req.depths, **req.options, out=out, log_x=log_x, overwrite=overwrite,
                                                resume=resume, **DepthReporter(bars, req.depths).hooks()),
                       interrupted_text, out_path(out))
    show(depth_summary(result))
    say(f"{len(req.depths)} depths in {result.seconds:.1f} s; wrote {out}/: depth_XX/ depth_metrics.csv "
        "depth_summary.csv sweep.json depth_acc.png")
    if tensorboard is not None:
        with console.status(escape(f"writing TensorBoard runs to {tensorboard}…")):
            n = export_tensorboard(result.results, tensorboard)
        say(f"wrote {n} TensorBoard runs to {tensorboard}/ (tensorboard --logdir {tensorboard})")
    if store is not None:
        n = record_results(result.results.values(), store)
        say(f"run store {store}: {n['recorded']} runs recorded, {n['kept']} already there")
    write_html_report(report_html, out)
