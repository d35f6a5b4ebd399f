"""``probe`` as a command runs it: options checked, the depth profile taken, the result folder written.

:func:`run_probe` checks every option before any work (sizes, seed, options that have no effect,
the schemes, the output folder), takes :func:`~initlab.analysis.diagnostics.depth_profile` of an
MLP or a ``model`` at init under each scheme, summarizes it per (activation, init) and writes
probe.csv, summary.csv and the plots; every user error is a one-line ``ValueError``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from initlab import store
from initlab.analysis.diagnostics import depth_profile, profile_summary
from initlab.core.checks import MAX_INT
from initlab.models import MAX_DEPTH, MAX_WIDTH
from initlab.plots.probe import plot_profile
from initlab.schemes import parse_scheme_list, split_top_level

DEFAULT_ACTIVATIONS = "relu,tanh"
DEFAULT_INITS = "zero,random,xavier,he,lecun_normal,orthogonal"


@dataclass
class ProbeRun:
    """What ``run_probe`` did: the per-layer ``frame``, its ``summary``, a ``title`` for it, the folder and plots."""

    frame: pd.DataFrame
    summary: pd.DataFrame
    title: str
    out: Path
    files: list[Path] = field(default_factory=list)


def run_probe(*, activations: str = DEFAULT_ACTIVATIONS, inits: str = DEFAULT_INITS, dataset: str = "digits",
              data_dir: str | Path | None = None, batch: int = 512, depth: int = 20, width: int = 256, seed: int = 0,
              model: str | None = None, out: str | Path = "runs/probe", overwrite: bool = False) -> ProbeRun:
    """Probe a ``depth`` × ``width`` MLP per activation in ``activations`` (comma-separated), or ``model`` (a zoo
    spec or ``module:factory``; then ``inits`` may hold ``none``: its own init), at init under each scheme of
    ``inits``, on the first ``batch`` training examples of ``dataset``; write the result folder ``out``."""
    if not 0 < depth <= MAX_DEPTH:
        raise ValueError(f"--depth must be a positive integer up to {MAX_DEPTH}, got {depth}")
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"--width must be a positive integer up to {MAX_WIDTH}, got {width}")
    if not 0 <= seed <= MAX_INT:
        raise ValueError(f"--seed must be an integer from 0 to {MAX_INT}, got {seed}")
    if model is not None and activations != DEFAULT_ACTIVATIONS:
        raise ValueError("--activations has no effect with --model (the model has its own); drop one of them")
    if data_dir is not None and dataset == "digits":
        raise ValueError("--data-dir has no effect with dataset 'digits' (bundled); drop it or choose mnist or "
                         "fashion-mnist")
    init_list = parse_scheme_list(inits, allow={"none"} if model is not None else ())
    store.check_out_dir(out, "probe", overwrite=overwrite)
    frame = depth_profile(split_top_level(activations, what="--activations"), init_list, dataset=dataset,
                          data_dir=None if data_dir is None else str(data_dir), depth=depth, width=width, batch=batch,
                          seed=seed, model=model)
    summary = profile_summary(frame)
    out_dir = store.claim_out_dir(out, "probe", overwrite=overwrite)
    arch = f"model {model}" if model else f"{depth}×{width} MLP"
    try:
        store.atomic_write_csv(out_dir / "probe.csv", frame.drop(columns=["hist_counts", "hist_edges"],
                                                                 errors="ignore"))
        store.atomic_write_csv(out_dir / "summary.csv", summary)
        paths = plot_profile(frame, out_dir, f"{dataset}, {arch}")
    except OSError as e:
        raise store.write_error(e) from None
    return ProbeRun(frame, summary, f"{dataset}, {arch}, batch {batch}: at init, measured (mean-field prediction)",
                    out_dir, list(paths))
