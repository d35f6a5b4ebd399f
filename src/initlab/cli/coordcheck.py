"""``initlab coordcheck``: μP's coordinate check, SP vs μP."""
from __future__ import annotations

import torch
from typer import Option

from initlab.cli.common import Dataset, Overwrite, Threads, call, out_option, say, show
from initlab.experiments.options import coordcheck_args
from initlab.report.tables import coord_growth
from initlab.analysis.coordcheck import output_layer, run_coord_check


def coordcheck(
    model: str = Option("mlp(depth=2)", help="Zoo mlp or transformer spec without width, e.g. "
                        "'transformer(depth=2,heads=4)'."),
    widths: str = Option("64,128,256,512,1024,2048", help="Comma-separated widths (at least two)."),
    base_width: int | None = Option(None, help="μP base width (default: the smallest width)."),
    steps: int = Option(3, help="Optimizer steps on one fixed batch."),
    seeds: int = Option(3, help="Seeds per width (the plot shows their mean)."),
    lr: float = Option(0.01, help="Global learning rate (μP: at the base width; per-layer multipliers on top)."),
    optimizer: str = Option("adam", help="adam | sgd"), batch_size: int = Option(64, help="Size of the fixed batch."),
    dataset: Dataset = "digits", readout_zero: bool = Option(False, "--readout-zero", help="μP: start the readout at zero."),
    threads: Threads = 1,
    out: out_option("Output folder: coords.csv, growth.csv, coordcheck_sp.png, coordcheck_mup.png.") = "runs/coordcheck",
    overwrite: Overwrite = False,
):
    """μP's coordinate check: activation size per layer vs width after a few steps, SP vs μP (Tensor Programs V)."""
    args = call(coordcheck_args, locals())
    torch.set_num_threads(threads)
    coords, growth = run_coord_check(out, overwrite=overwrite, readout_zero=readout_zero, **args)
    show(coord_growth(coords, growth, output_layer(coords), args["widths"]))
    say(f"wrote {out}/: config.json coords.csv growth.csv coordcheck_sp.png coordcheck_mup.png")
