"""Command options as typed specs: every check of what a user typed, run once, here.

The ``initlab`` commands pass their raw option values (comma-separated text such as ``"0.01,0.1"``,
ints, ``None`` for "not given"); the functions below check them and return what the library runs
(:class:`~initlab.experiments.compare.CompareSpec`, :class:`DepthRequest`, a
:class:`~initlab.experiments.sweeps.spec.SweepSpec`, μP's coordinate-check arguments), or raise a
one-line ``ValueError`` that names the option as typed (``--batch-size must be a positive integer,
got 0``) and what is allowed. The checks run in the order the command line has always run them,
so a command with two bad options reports the same one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initlab.core.checks import MAX_INT
from initlab.data import Dataset, load_dataset
from initlab.experiments.compare import CompareSpec, check_memory, check_resume, prepare_data, resumable
from initlab.experiments.depth import parse_depths
from initlab.experiments.sweeps.phase import phase_spec
from initlab.experiments.sweeps.record import compare_sweep
from initlab.experiments.sweeps.run import BACKENDS
from initlab.experiments.sweeps.spec import SweepSpec, expand_range, load_spec, spec_from_options
from initlab.models import MAX_DEPTH, MAX_WIDTH, depth_param, is_factory_spec, parse_hidden, parse_model
from initlab.schemes import split_top_level
from initlab.analysis.coordcheck import check_coord_args
from initlab.store import check_out_dir
from initlab.training.loop import TrainConfig, resolve_device


def check_threads(threads: int) -> int:
    """Threads beyond the CPUs only slow torch down, and huge counts overflow or exhaust the OS."""
    cpus = os.cpu_count() or 1
    if not 0 < threads <= cpus:
        raise ValueError(f"--threads must be from 1 to {cpus} (this machine's CPUs), got {threads}")
    return threads


def check_positive(**values: int) -> None:
    """Integer options that must be positive (and fit int64), named as typed: ``batch_size`` is ``--batch-size``."""
    for name, v in values.items():
        if not 0 < v <= MAX_INT:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")


def resolve_hidden(hidden: str | None, depth: int | None, width: int | None) -> tuple[int, ...]:
    """The MLP's hidden widths from ``--hidden "256,256"`` or ``--depth``/``--width`` (default one layer of 128)."""
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


def parse_values(text: str | None, what: str, kind: type = str) -> list | None:
    """``"0.01,0.1"`` -> ``[0.01, 0.1]`` (``kind`` int, float or str) for the option ``--what``; None stays None."""
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


# ----------------------------------------------------------------------------- compare


def compare_spec(*, inits: str, dataset: str = "mnist", data_dir: str | Path | None = None, normalize: str = "seed",
                 hidden: str | None = None, depth: int | None = None, width: int | None = None,
                 activation: str = "relu", model: str | None = None, seeds: int = 1, first_seed: int = 0,
                 epochs: int = 10, batch_size: int = 64, lr: float = 0.01, momentum: float = 0.0,
                 optimizer: str = "sgd", diverge_loss: float = TrainConfig.diverge_loss, device: str = "auto",
                 engine: str = "auto", probe: bool = True) -> CompareSpec:
    """``initlab compare``'s options as a checked :class:`CompareSpec`: ``inits`` comma-separated, the MLP's
    widths from ``hidden`` ("256,256") or ``depth`` × ``width`` (not both)."""
    check_positive(epochs=epochs, seeds=seeds, batch_size=batch_size)
    return CompareSpec(
        inits=split_top_level(inits, what="--inits"), dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
        normalize=normalize, hidden=resolve_hidden(hidden, depth, width), activation=activation, seeds=seeds,
        first_seed=first_seed, device=device, engine=engine, probe=probe, model=model,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, optimizer=optimizer,
                          diverge_loss=diverge_loss))


def open_compare(spec: CompareSpec, out: str | Path, *, overwrite: bool = False, resume: bool = False) -> bool:
    """Check that ``out`` may take this comparison (and, resuming, that it is the same one); returns whether
    it resumes (:func:`~initlab.experiments.compare.resumable`)."""
    resume = resumable(out, resume)
    check_out_dir(out, "compare", overwrite=overwrite, resume=resume)
    if resume:
        check_resume(out, spec)
    return resume


def compare_data(spec: CompareSpec, *, store: str | None = None) -> Dataset:
    """The comparison's data, loaded and shaped for its model, after the memory check; with a run
    ``store``, a comparison the store cannot express is refused here, before training."""
    data = load_dataset(spec.dataset, data_dir=spec.data_dir, normalize=spec.normalize)
    check_memory(spec, data, resolve_device(spec.device))
    data = prepare_data(spec, data)  # the model runs on this data and returns logits, or one line now
    if store is not None:
        compare_sweep(spec)
    return data


# ----------------------------------------------------------------------------- depth


@dataclass(frozen=True)
class DepthRequest:
    """A checked depth sweep: ``depths``, the comparison at the deepest one (``spec``: what the run store and
    trackers are checked against) and the keyword arguments of :func:`~initlab.experiments.depth.depth_sweep`."""

    depths: tuple[int, ...]
    spec: CompareSpec
    options: dict[str, Any] = field(default_factory=dict)


def depth_request(*, depths: str, inits: str, dataset: str = "digits", data_dir: str | Path | None = None,
                  width: int | None = None, activation: str | None = None, model: str | None = None,
                  epochs: int = 10, seeds: int = 1, lr: float = 0.01, optimizer: str = "sgd", momentum: float = 0.0,
                  batch_size: int = 64, threads: int = 1, device: str = "auto",
                  diverge_loss: float = TrainConfig.diverge_loss, out: str = "runs/depth", overwrite: bool = False,
                  resume: bool = False, store: str | None = None) -> DepthRequest:
    """``initlab depth``'s options, checked (``out`` too) before anything trains; ``width`` and ``activation``
    are the MLP's (default 64, relu), a ``model`` must be a zoo spec whose depth parameter is known."""
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
    spec = CompareSpec(inits=split_top_level(inits, what="--inits"), dataset=dataset,
                       data_dir=None if data_dir is None else str(data_dir),
                       hidden=(width,) if zoo is None else (128,), activation=activation if zoo is None else "relu",
                       seeds=seeds, device=device, model=zoo,
                       train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                                         optimizer=optimizer, diverge_loss=diverge_loss))
    check_out_dir(out, "depth", overwrite=overwrite, resume=resume)
    if store is not None:  # a sweep the store cannot express is refused before training
        compare_sweep(spec)
    return DepthRequest(depth_list, spec, dict(
        inits=spec.inits, dataset=dataset, width=width, activation=activation, epochs=epochs, seeds=seeds, lr=lr,
        batch_size=batch_size, optimizer=optimizer, momentum=momentum, device=device, data_dir=spec.data_dir,
        diverge_loss=diverge_loss, model=model))


# ----------------------------------------------------------------------------- sweep and phase

# the sweep command's list options: name, kind of each item, and the option as typed (for messages)
SWEEP_AXES = {"inits": (str, "inits"), "model": (str, "model"), "depth": (int, "depth"), "width": (int, "width"),
              "activation": (str, "activation"), "optimizer": (str, "optimizer"), "lr": (float, "lr"),
              "momentum": (float, "momentum"), "batch_size": (int, "batch-size"), "epochs": (int, "epochs"),
              "dataset": (str, "dataset")}


def sweep_spec(spec_file: str | Path | None = None, *, inits: str | None = None, model: str | None = None,
               depth: str | None = None, width: str | None = None, activation: str | None = None,
               optimizer: str | None = None, lr: str | None = None, momentum: str | None = None,
               batch_size: str | None = None, epochs: str | None = None, dataset: str | None = None,
               seeds: str | None = None, zip_axes: str | None = None, name: str | None = None,
               val_fraction: float | None = None, val_seed: int | None = None, normalize: str | None = None,
               data_dir: str | None = None, train_eval: str | None = None, probe: bool | None = None,
               device: str | None = None, engine: str | None = None, threads: int = 1, backend: str = "local",
               address: str | None = None, max_group: int | None = None) -> SweepSpec:
    """``initlab sweep``'s options as a :class:`SweepSpec`: the axes (:data:`SWEEP_AXES`) as comma-separated
    text, ``seeds`` a count ("3") or a list ("0,5,7"), ``zip_axes`` "depth+width" groups, the sweep options as
    values (None: not given; with ``spec_file``, a TOML spec, the options given replace its keys); then the
    thread count, the backend (``address`` only with ray) and ``max_group``."""
    text = dict(inits=inits, model=model, depth=depth, width=width, activation=activation, optimizer=optimizer,
                lr=lr, momentum=momentum, batch_size=batch_size, epochs=epochs, dataset=dataset)
    axes = {k: parse_values(text[k], what, kind) for k, (kind, what) in SWEEP_AXES.items()}
    if seeds is not None:
        s = parse_values(seeds, "seeds", int)
        one = len(s) == 1 and "," not in seeds
        axes["seeds" if one else "seed"] = s[0] if one else s
    options = dict(name=name, val_fraction=val_fraction, val_seed=val_seed, normalize=normalize, data_dir=data_dir,
                   train_eval=train_eval, probe=probe, device=device, engine=engine)
    if zip_axes is not None:
        options["zip"] = [[a.strip() for a in g.split("+")] for g in zip_axes.split(",")]
    given = {k: v for k, v in {**axes, **options}.items() if v is not None}
    spec = load_spec(spec_file, given) if spec_file is not None else spec_from_options(given)
    check_threads(threads)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError("--address has no effect without --backend ray; drop it or add --backend ray")
    if max_group is not None and max_group <= 0:
        raise ValueError(f"--max-group must be a positive integer, got {max_group}")
    return spec


def sigma_w2_values(text: str) -> list[float]:
    """``"start:stop:num"`` (evenly spaced, both ends included) or a list ``"1,1.5,2"``: positive numbers."""
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"--sigma-w2 range is 'start:stop:num', got {text!r}")
        try:
            values = expand_range("--sigma-w2", {"start": float(parts[0]), "stop": float(parts[1]),
                                                 "num": int(parts[2])})
        except ValueError:
            raise ValueError(f"--sigma-w2 range is 'start:stop:num' with numbers, got {text!r}") from None
    else:
        values = parse_values(text, "sigma-w2", float)
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise ValueError(f"--sigma-w2 values must be positive numbers, got {text!r}")
    return values


def phase_request(*, sigma_w2: str, depths: str, sigma_b2: float, width: int, dataset: str, steps: int, lr: float,
                  batch_size: int, seeds: int, threads: int = 1) -> SweepSpec:
    """``initlab phase``'s options as the phase-diagram sweep (:func:`~initlab.experiments.sweeps.phase.phase_spec`)."""
    values = sigma_w2_values(sigma_w2)
    check_positive(width=width, steps=steps, batch_size=batch_size, seeds=seeds)
    check_threads(threads)
    return phase_spec(values, parse_values(depths, "depths", int), sigma_b2=sigma_b2, width=width, dataset=dataset,
                      steps=steps, lr=lr, batch_size=batch_size, seeds=seeds)


# ----------------------------------------------------------------------------- coordcheck


def coordcheck_args(*, model: str, widths: str, base_width: int | None, steps: int, seeds: int, lr: float,
                    optimizer: str, batch_size: int, dataset: str = "digits", threads: int = 1, out: str,
                    overwrite: bool = False) -> dict:
    """``initlab coordcheck``'s options, checked (``out`` too), as keyword arguments of
    :func:`~initlab.analysis.coordcheck.run_coord_check` with the ``dataset`` loaded (as ``data``), before anything is
    written; ``readout_zero`` is not among them."""
    check_threads(threads)
    ws = []
    for item in split_top_level(widths, what="--widths"):
        try:
            ws.append(int(item))
        except ValueError:
            raise ValueError(f"--widths must be comma-separated integers, got {item!r}") from None
    check_out_dir(out, "coordcheck", overwrite=overwrite)
    args = dict(model=model, widths=tuple(ws), base_width=base_width, steps=steps, seeds=seeds, lr=lr,
                optimizer=optimizer, batch_size=batch_size)
    check_coord_args(**args)
    return {**args, "dataset": dataset, "data": load_dataset(dataset)}
