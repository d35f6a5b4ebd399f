"""Sweep specs: axes of values, their product (or ``zip`` groups), one canonical dict per run.

A sweep is written as TOML (read with the standard library's ``tomllib``) or built in Python::

    name = "tuned-lr"
    dataset = "fashion-mnist"
    inits = ["zero", "random", "xavier", "he"]
    lr = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]      # or { start = 1e-3, stop = 0.3, num = 6, log = true }
    seeds = 3                                         # run seeds 0, 1, 2 (or a list: [0, 5, 7])
    epochs = 10
    val_fraction = 0.1                                # validation split carved from train (seeded)

Axes (each a value or a list; ``AXES``): ``init``/``inits``, ``model`` (zoo spec or
``module:factory``), ``depth``, ``width``, ``activation`` (the MLP's, or a zoo model's depth
parameter for ``depth``), ``optimizer``, ``lr``, ``momentum``, ``batch_size``, ``epochs``,
``dataset``, ``seed``/``seeds``. The runs are the product of the axes, except that axes named
together in a ``zip`` group (``zip = [["depth", "width"]]``) move together: they must list as many
values each, and contribute one factor whose values are their tuples. Everything else (``OPTIONS``)
is one value for the whole sweep.

Each run is a flat dict of canonical values (:meth:`SweepSpec.runs`); its :func:`run_hash` (sha256
of the sorted JSON, 16 hex digits) names it in the run store, so the same run in two sweeps, or in
a rerun of one, is one row. Runs that differ only in ``init``, ``seed``, ``lr`` and ``momentum``
share an **engine group** (:func:`group_key`): one batched computation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from initlab.data import DATASETS, NORMALIZATIONS
from initlab.experiments.compare import ENGINES
from initlab.models import (
    MAX_DEPTH,
    MAX_WIDTH,
    check_activation,
    depth_param,
    is_factory_spec,
    parse_model,
    resolve_model,
)
from initlab.schemes import parse_scheme_list, split_top_level
from initlab.training.loop import TrainConfig, resolve_device

# axis name -> accepted spellings (the plural is how lists read naturally in a file)
AXES = {
    "init": ("init", "inits"),
    "model": ("model", "models"),
    "depth": ("depth", "depths"),
    "width": ("width", "widths"),
    "activation": ("activation", "activations"),
    "optimizer": ("optimizer", "optimizers"),
    "lr": ("lr", "lrs"),
    "momentum": ("momentum",),
    "batch_size": ("batch_size", "batch_sizes"),
    "epochs": ("epochs",),
    "dataset": ("dataset", "datasets"),
    "seed": ("seed", "seeds"),
}
# one value for the whole sweep; the default in parentheses of each field comment below
OPTIONS = ("name", "normalize", "data_dir", "val_fraction", "val_seed", "diverge_loss", "probe", "train_eval",
           "device", "engine", "first_seed", "zip")
DEFAULTS = {"init": "he", "model": None, "depth": 1, "width": 128, "activation": "relu", "optimizer": "sgd",
            "lr": 0.01, "momentum": 0.0, "batch_size": 64, "epochs": 10, "dataset": "digits", "seed": 0}
# what may differ inside one engine group (initlab.training.mlp_engine: per-model lr and momentum; init and seed
# only change the initial parameters and the data order)
WITHIN_GROUP = ("init", "seed", "lr", "momentum")
# run fields that change how a run is computed, not its result: not hashed
UNHASHED = ("device", "engine")
TRAIN_EVAL = ("none", "final", "every")
KNOWN_SIZES = {"digits": (1437, 360, (8, 8)), "mnist": (60000, 10000, (28, 28)),
               "fashion-mnist": (60000, 10000, (28, 28))}


def _spelling(key: str) -> str | None:
    for axis, names in AXES.items():
        if key in names:
            return axis
    return None


def _round(x: float) -> float:
    """Grid values to 6 significant digits: ``0.30000000000000004`` hashes as ``0.3``."""
    return float(f"{x:.6g}")


def expand_range(axis: str, table: Mapping) -> list[float]:
    """``{start, stop, num, log}`` -> ``num`` values from start to stop (both included), evenly spaced
    on a log scale when ``log`` is true, rounded to 6 significant digits."""
    allowed = {"start", "stop", "num", "log"}
    extra = set(table) - allowed
    if extra or not {"start", "stop", "num"} <= set(table):
        raise ValueError(f"{axis}: a range is {{ start = .., stop = .., num = .., log = false }}, got keys "
                         f"{', '.join(sorted(table))}")
    start, stop, num, log = table["start"], table["stop"], table["num"], table.get("log", False)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (start, stop)):
        raise ValueError(f"{axis}: range start and stop must be finite numbers, got {start!r} and {stop!r}")
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 10_000:
        raise ValueError(f"{axis}: range num must be an integer from 1 to 10000, got {num!r}")
    if not isinstance(log, bool):
        raise ValueError(f"{axis}: range log must be true or false, got {log!r}")
    if log and not (start > 0 and stop > 0):
        raise ValueError(f"{axis}: a log range needs positive start and stop, got {start!r} and {stop!r}")
    if num == 1:
        return [_round(float(start))]
    t = [i / (num - 1) for i in range(num)]
    if log:
        a, b = math.log(start), math.log(stop)
        return [_round(math.exp(a + (b - a) * s)) for s in t]
    return [_round(start + (stop - start) * s) for s in t]


def _as_list(axis: str, value: Any) -> list:
    if isinstance(value, Mapping):
        return expand_range(axis, value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{axis}: empty list; give at least one value")
        return list(value)
    if isinstance(value, str) and axis in ("init", "model", "activation", "optimizer", "dataset"):
        return split_top_level(value, what=axis)
    return [value]


def _int(axis: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{axis} must be an integer from {lo} to {hi}, got {v!r}")
    return int(v)


def _number(axis: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{axis} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SweepSpec:
    """A grid of runs: ``axes`` (axis -> values), ``zip`` groups, and sweep-wide options."""

    axes: Mapping[str, tuple] = field(default_factory=dict)  # axis -> values; missing axes take DEFAULTS
    zip: tuple[tuple[str, ...], ...] = ()  # axes that move together
    name: str = "sweep"  # a label for listings; the sweep's identity is the hash of everything
    normalize: str = "seed"  # seed | standardize | none (initlab.data.load_dataset)
    data_dir: str | None = None  # IDX files folder (not for digits)
    val_fraction: float = 0.1  # validation split carved from the training set, per class; 0: none
    val_seed: int = 0  # fixes which examples are validation (initlab.data.split_validation)
    diverge_loss: float = 1000.0  # divergence bound on end-of-epoch held-out loss, × ln C (initlab.training.loop)
    probe: bool = False  # per-layer statistics (initlab.analysis.probe) at init and after the last epoch
    train_eval: str = "none"  # accuracy on the (kept) training set: none | final (last epoch) | every epoch
    device: str = "auto"  # auto | cpu | cuda; not part of a run's identity
    engine: str = "batched"  # batched | single; not part of a run's identity (same results)
    first_seed: int = 0  # seeds = n means first_seed .. first_seed+n-1

    def __post_init__(self):
        axes = {}
        for key, value in dict(self.axes).items():
            axis = _spelling(key)
            if axis is None:
                raise ValueError(f"unknown axis {key!r}; choose from: {', '.join(AXES)}")
            if axis in axes:
                raise ValueError(f"axis {axis!r} given twice (as {key!r} and another spelling)")
            if axis == "seed" and isinstance(value, int) and not isinstance(value, bool) and key == "seeds":
                n = _int("seeds", value, 1, 1_000_000)
                value = list(range(self.first_seed, self.first_seed + n))
            axes[axis] = tuple(_as_list(axis, value))
        object.__setattr__(self, "axes", axes)
        zips = tuple(tuple(_spelling(a) or a for a in group) for group in (self.zip or ()))
        seen: set[str] = set()
        for group in zips:
            if len(group) < 2:
                raise ValueError(f"a zip group names at least two axes, got {list(group)}")
            for a in group:
                if a not in AXES:
                    raise ValueError(f"zip names unknown axis {a!r}; choose from: {', '.join(AXES)}")
                if a not in axes:
                    raise ValueError(f"zip names axis {a!r}, which the sweep does not set; give its values")
                if a in seen:
                    raise ValueError(f"axis {a!r} is in two zip groups; an axis moves with one group")
                seen.add(a)
            lengths = {a: len(axes[a]) for a in group}
            if len(set(lengths.values())) != 1:
                raise ValueError("zipped axes must list as many values each, got "
                                 + ", ".join(f"{a}: {n}" for a, n in lengths.items()))
        object.__setattr__(self, "zip", zips)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")

        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {self.normalize!r}; choose from: {', '.join(NORMALIZATIONS)}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be a number in [0, 1), got {self.val_fraction!r}")
        _int("val_seed", self.val_seed, 0, (1 << 63) - 1)
        _int("first_seed", self.first_seed, 0, (1 << 62))
        if not isinstance(self.probe, bool):
            raise ValueError(f"probe must be true or false, got {self.probe!r}")
        if self.train_eval not in TRAIN_EVAL:
            raise ValueError(f"unknown train_eval {self.train_eval!r}; choose from: {', '.join(TRAIN_EVAL)}")

        resolve_device(self.device)
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from: {', '.join(ENGINES)}")
        object.__setattr__(self, "_runs", self._expand())  # every value checked now, before anything runs

    # ------------------------------------------------------------------ runs

    def values(self, axis: str) -> tuple:
        return self.axes.get(axis, (DEFAULTS[axis],))

    def factors(self) -> list[tuple[tuple[str, ...], list[tuple]]]:
        """The product's factors: (axes, list of value tuples), zip groups as one factor each."""
        zipped = {a for g in self.zip for a in g}
        out = []
        for axis in AXES:
            if axis in zipped:
                group = next(g for g in self.zip if axis in g)
                if axis == group[0]:
                    out.append((group, list(zip(*(self.axes[a] for a in group)))))
            else:
                out.append(((axis,), [(v,) for v in self.values(axis)]))
        return out

    def runs(self) -> list[dict]:
        """One canonical, checked dict per run, in a fixed order: every engine group's runs together
        (groups in the order their first run appears), inside a group seed-major, then init, lr."""
        return [dict(r) for r in self._runs]

    def _expand(self) -> list[dict]:
        factors = self.factors()
        runs, seen = [], set()
        for combo in itertools.product(*(vals for _, vals in factors)):
            raw = {}
            for (names, _), vals in zip(factors, combo):
                raw.update(zip(names, vals))
            run = self._canonical(raw)
            h = run_hash(run)
            if h in seen:
                raise ValueError(f"the sweep lists one run twice ({describe(run)}); remove the duplicate value")
            seen.add(h)
            runs.append(run)
        order = {}
        for r in runs:
            order.setdefault(group_key(r), len(order))
        inits = {v: i for i, v in enumerate(dict.fromkeys(r["init"] for r in runs))}
        runs.sort(key=lambda r: (order[group_key(r)], r["seed"], inits[r["init"]], r["lr"], r["momentum"]))
        return runs

    def _canonical(self, raw: dict) -> dict:

        dataset = raw["dataset"]
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; choose from: {', '.join(DATASETS)}")
        if self.data_dir is not None and dataset == "digits":
            raise ValueError("data_dir has no effect with dataset 'digits' (bundled); drop it")
        model, depth, width, activation = raw["model"], raw["depth"], raw["width"], raw["activation"]
        explicit = {a for a in ("depth", "width", "activation") if a in self.axes}
        if model is not None and not isinstance(model, str):
            raise ValueError(f"model must be a zoo spec like 'cnn(channels=8)' or 'module:factory', got {model!r}")
        if model is not None and is_factory_spec(model):
            if explicit:
                raise ValueError(f"{', '.join(sorted(explicit))} cannot be set for a 'module:factory' model "
                                 f"({model}); give them to the factory")

            resolve_model(model)  # imports it: a typo fails now
            depth = width = activation = None
        else:
            spec = parse_model(model) if model is not None else None
            if spec is None or spec.name == "mlp":
                params = dict(spec.params) if spec is not None else {}
                for a, v in (("depth", depth), ("width", width), ("activation", activation)):
                    if a in explicit or a not in params:
                        params[a] = v
                depth = _int("depth", params["depth"], 0, MAX_DEPTH)
                width = _int("width", params["width"], 1, MAX_WIDTH)
                activation = check_activation(params["activation"])
                model = f"mlp(depth={depth},width={width},activation={activation})"
            else:
                if explicit - {"depth"}:
                    raise ValueError(f"{', '.join(sorted(explicit - {'depth'}))} apply to the MLP only; give them in "
                                     f"the model spec, e.g. '{spec.name}(activation=tanh)'")
                key = depth_param(spec)
                if "depth" in explicit:
                    spec = parse_model(spec.with_params(**{key: _int("depth", depth, 0, MAX_DEPTH)}))
                depth = spec.params.get(key)
                width = activation = None
                model = str(spec)
        lr, momentum = _number("lr", raw["lr"]), _number("momentum", raw["momentum"])
        train = TrainConfig(epochs=raw["epochs"], batch_size=raw["batch_size"], lr=lr, momentum=momentum,
                            optimizer=raw["optimizer"], diverge_loss=self.diverge_loss)
        own_init = model is not None and is_factory_spec(model)
        (init,) = parse_scheme_list([raw["init"]], allow={"none"} if own_init else ())
        seed = _int("seed", raw["seed"], 0, (1 << 62))
        return {
            "dataset": dataset, "normalize": self.normalize, "data_dir": self.data_dir,
            "val_fraction": float(self.val_fraction), "val_seed": int(self.val_seed),
            "model": model, "depth": depth, "width": width, "activation": activation,
            "init": init, "optimizer": train.optimizer, "lr": _round(train.lr), "momentum": _round(train.momentum),
            "batch_size": train.batch_size, "epochs": train.epochs, "seed": seed,
            "diverge_loss": float(train.diverge_loss), "probe": self.probe, "train_eval": self.train_eval,
        }

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["axes"] = {k: list(v) for k, v in self.axes.items()}
        d["zip"] = [list(g) for g in self.zip]
        return d

    @property
    def hash(self) -> str:
        """The sweep's identity: its runs (in order) and name; device and engine do not count."""
        return _sha({"name": self.name, "runs": [run_hash(r) for r in self._runs]})


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def run_hash(run: Mapping) -> str:
    """A stable name for a run: sha256 of its canonical JSON (sorted keys), first 16 hex digits."""
    return _sha({k: v for k, v in run.items() if k not in UNHASHED})


def group_key(run: Mapping) -> str:
    """What must agree for runs to train as one batched computation: everything but WITHIN_GROUP."""
    return _sha({k: v for k, v in run.items() if k not in WITHIN_GROUP and k not in UNHASHED})


def describe(run: Mapping) -> str:
    """``he lr 0.01 seed 0, mlp(depth=1,width=128,activation=relu) on digits`` for messages."""
    return f"{run['init']} lr {run['lr']:g} seed {run['seed']}, {run['model']} on {run['dataset']}"


def from_mapping(data: Mapping, *, source: str = "spec") -> SweepSpec:
    """A :class:`SweepSpec` from a parsed TOML table (top level, or under ``[sweep]``)."""
    if set(data) == {"sweep"} and isinstance(data["sweep"], Mapping):
        data = data["sweep"]
    axes, options = {}, {}
    for key, value in data.items():
        if _spelling(key) is not None:
            axes[key] = value
        elif key in OPTIONS:
            options[key] = value
        else:
            raise ValueError(f"{source}: unknown key {key!r}; axes: {', '.join(AXES)}; options: {', '.join(OPTIONS)}")
    if "zip" in options:
        z = options["zip"]
        if isinstance(z, list) and z and all(isinstance(a, str) for a in z):
            z = [z]  # zip = ["depth", "width"]: one group
        if not isinstance(z, list) or not all(isinstance(g, list) and all(isinstance(a, str) for a in g) for g in z):
            raise ValueError(f"{source}: zip is a list of axis-name lists, e.g. zip = [[\"depth\", \"width\"]], got {z!r}")
        options["zip"] = tuple(tuple(g) for g in z)
    first = options.pop("first_seed", 0)
    return SweepSpec(axes=axes, first_seed=first, **options)


def load_spec(path: str | Path, overrides: Mapping | None = None) -> SweepSpec:
    """Read a sweep spec from a TOML file; ``overrides`` (axes or options) replace its keys.

    Errors (a missing file, bad TOML, unknown keys, bad values) are one-line ValueErrors naming the file.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read sweep spec '{path}': {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"sweep spec '{path}' is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"sweep spec '{path}' is not valid TOML: {e}") from None
    if overrides:
        if set(data) == {"sweep"} and isinstance(data["sweep"], Mapping):
            data = dict(data["sweep"])
        for key, value in overrides.items():
            axis = _spelling(key)
            for k in list(data):  # an override replaces every spelling of its axis
                if k == key or (axis is not None and _spelling(k) == axis):
                    del data[k]
            data[key] = value
    try:
        return from_mapping(data, source=str(path))
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def spec_from_options(options: Mapping) -> SweepSpec:
    """A :class:`SweepSpec` from CLI-style options (None = not given)."""
    return from_mapping({k: v for k, v in options.items() if v is not None}, source="options")
