"""``initlab coordcheck``: μP's coordinate check, SP vs μP."""
from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from initlab.cli.common import OUT_HELP, check_threads, console, fail, fmt, split_top_level
from initlab.data import load_dataset
from initlab.schemes.mup import check_coord_args, output_layer, run_coord_check
from initlab.store import check_out_dir, write_error


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
