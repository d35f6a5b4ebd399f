"""TensorBoard export of a finished comparison (``initlab compare --tensorboard DIR``).

The export runs *after* training, from the :class:`~initlab.experiments.compare.CompareResult` (or a compare
result folder on disk): the engines know nothing of TensorBoard. One TensorBoard run per
(init, seed), in ``DIR/<init>/seed<k>`` (the init's scheme string made path-safe:
``normal(std=0.05)`` becomes ``normal_std=0.05_``), holding

- ``step/train_loss`` — training loss at every optimizer step (global step, from ``steps``);
- ``epoch/train_loss``, ``epoch/test_loss``, ``epoch/test_acc``, ``epoch/diverged`` (0/1) — one
  point per finished epoch (step = epoch, 1-based);
- ``probe/<stat>/<layer>`` — every per-layer probe statistic (out_std, dead_frac, grad_out_norm,
  eff_rank, ...) that has a finite value, at step = epoch (0 = at init);
- ``weights/<parameter>`` — histograms of every parameter of the run's model *at init* (step 0),
  rebuilt exactly as the run built it (same scheme, same seed). Per-epoch weight histograms are
  **not** logged: the result keeps no trained models, and getting them would mean hooking the
  engines; the probe statistics are the per-epoch view of each layer;
- ``run/status`` — text: the run's final status (done, diverged with epoch/step/reason, ...);
- hparams (HParams dashboard): init, seed, dataset, model, hidden, activation, optimizer, lr,
  momentum, batch_size, epochs, status; metrics ``hparam/final_test_acc``,
  ``hparam/final_test_loss`` (also logged as scalars at the last epoch).

TensorBoard itself (``pip install 'initlab[tensorboard]'``) is needed to write; it is an optional
dependency, checked by :func:`require`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from initlab.data import load_dataset
from initlab.experiments.compare import build_model, prepare_data
from initlab.schemes import parse_scheme
from initlab.trackers.common import RunRecord, hparams_record, number, probe_stat_columns, read_folder, run_keys

INSTALL_HINT = "pip install 'initlab[tensorboard]'"


def require() -> None:
    """ValueError (one line, naming the install command) unless TensorBoard can be written."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ValueError(f"--tensorboard needs the tensorboard package ({e}); install it with: {INSTALL_HINT}") from None


def sanitize(name: str) -> str:
    """``name`` as one safe path component: characters outside ``[A-Za-z0-9._=+-]`` become ``_``."""
    text = re.sub(r"[^A-Za-z0-9._=+-]", "_", str(name)).strip(".")
    return text or "_"


def run_dirs(inits: Iterable[str], seeds: Iterable[int]) -> dict[tuple[str, int], Path]:
    """Relative run folder of each (init, seed): ``<sanitized init>/seed<k>``; two inits that sanitize
    alike get ``-2``, ``-3``, ... suffixes in the order given."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for init in inits:
        if init in names:
            continue
        base = sanitize(init)
        name, k = base, 1
        while name.lower() in used:  # case-insensitive file systems too
            k += 1
            name = f"{base}-{k}"
        used.add(name.lower())
        names[init] = name
    seeds = list(seeds)
    return {(init, int(s)): Path(name) / f"seed{int(s)}" for init, name in names.items() for s in seeds}


def check_logdir(logdir: str | Path, inits: Iterable[str], seeds: Iterable[int]) -> None:
    """ValueError unless every run folder the export would write is absent or empty (TensorBoard would
    merge new event files with old ones into one confusing run), and ``logdir`` is not a file."""
    logdir = Path(logdir)
    if logdir.exists() and not logdir.is_dir():
        raise ValueError(f"--tensorboard '{logdir}' is a file, not a folder")
    for rel in run_dirs(inits, seeds).values():
        d = logdir / rel
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise ValueError(f"--tensorboard folder '{d}' already holds a run; choose a new folder or remove it")


def _initial_weights(spec, inits: Iterable[str], seeds: Iterable[int], data=None):
    """{(init, seed): {param name: tensor}} of the models as each run built them at init (CPU)."""

    if data is None:
        data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
    data = prepare_data(spec, data).to("cpu")
    out = {}
    for init in inits:
        scheme = parse_scheme(init)
        for seed in seeds:
            model = build_model(spec, data, scheme, int(seed), "cpu")
            out[(init, int(seed))] = {n: p.detach().cpu() for n, p in model.named_parameters()}
    return out


def export(source, logdir: str | Path, *, histograms: bool = True, data=None) -> list[Path]:
    """Write the TensorBoard runs of a comparison (see the module docstring for layout and tags).

    ``source``: a :class:`~initlab.experiments.compare.CompareResult` or a compare result folder. ``histograms``:
    rebuild each run's model at init for weight histograms (needs the dataset; ``data``, the loaded
    dataset, saves loading it again). Returns the run folders written. ValueError (one line) when
    TensorBoard is missing or a run folder already holds events.
    """
    require()
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    if isinstance(source, (str, Path)):
        spec, spec_d, metrics, steps, probe, runs = read_folder(Path(source))
    else:
        spec = source.spec
        spec_d = spec.to_dict()
        metrics, steps, probe, runs = source.metrics, source.steps, source.probe, source.runs
    keys = run_keys(runs, metrics)
    inits = list(dict.fromkeys(k[0] for k in keys))
    seeds = sorted({k[1] for k in keys})
    logdir = Path(logdir)
    check_logdir(logdir, inits, seeds)
    dirs = run_dirs(inits, seeds)

    weights = {}
    if histograms and spec is not None:
        weights = _initial_weights(spec, inits, seeds, data)

    stat_cols = probe_stat_columns(probe)
    written = []
    for init, seed in keys:
        path = logdir / dirs[(init, seed)]
        rec = RunRecord.of(init, seed, metrics, steps, probe, runs)
        status, last_epoch = rec.status, rec.last_epoch
        with SummaryWriter(log_dir=str(path)) as w:
            for parts, value, step in rec.scalars(stat_cols):
                if parts[0] == "probe" and number(value) is None:
                    continue  # a statistic a layer does not have (NaN); epoch NaNs are logged as NaN
                w.add_scalar("/".join(parts), float(value), step)
            for name, t in weights.get((init, seed), {}).items():
                if t.numel() and bool(t.isfinite().all()):
                    w.add_histogram(f"weights/{name}", t, 0)
            w.add_text("run/status", _status_text(status, rec.run), last_epoch)
            final_acc, final_loss = rec.final()
            metric = {"hparam/final_test_acc": float("nan") if final_acc is None else final_acc,
                      "hparam/final_test_loss": float("nan") if final_loss is None else final_loss}
            exp, ssi, sei = hparams(hparams_record(spec_d, init, seed, status), metric,
                                    {"init": inits} if len(inits) > 1 else None)
            for summ in (exp, ssi, sei):
                w.file_writer.add_summary(summ)
            for k, v in metric.items():
                w.add_scalar(k, v, last_epoch)
        written.append(path)
    return written


def _status_text(status: str, run) -> str:
    text = f"status: {status}"
    if run is not None:
        for key in ("epochs_done", "diverged_epoch", "diverged_step", "diverge_reason"):
            if key in run and not pd.isna(run[key]):
                text += f"; {key}: {run[key]}"
    return text
