"""What a sweep will do before it does it: engine groups, memory, a rough time (``--dry-run``).

Runs that share everything but init, seed, lr and momentum form one **engine group**: the batched
engines (:mod:`initlab.training.mlp_engine` for initlab's MLPs, :mod:`initlab.training.func_engine` for any vmappable
model) train it as one computation, in chunks of as many models as fit the engine's memory budget
(1 GiB: ``engine.DEFAULT_MEMORY_BUDGET``). Nothing is loaded or trained here: datasets are sized
from ``KNOWN_SIZES`` and models are built on PyTorch's ``meta`` device (or, for the engine check
and FLOP count of models other than the MLP, once on the CPU).

The time estimate is FLOPs over a measured speed: training one example costs ~3 forward passes
(forward, input and weight gradients), evaluation one; the speed is a 0.2 s float32 matmul
measurement on this machine times ``EFFICIENCY`` (what the batched engine attains, measured with
benchmarks/bench_sweep.py), plus ``STEP_OVERHEAD`` seconds per optimizer step per chunk (Python
and small-op costs, which dominate for tiny models) and fixed costs per run and per chunk. Expect
it within a factor of ~2 on an idle machine; a busy one is slower by its load.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from initlab.data import Dataset
from initlab.experiments.compare import CompareSpec, estimate_memory, image_in_shape
from initlab.experiments.sweeps.spec import KNOWN_SIZES, SweepSpec, group_key, run_hash
from initlab.models import input_shape_of, make_model
from initlab.training.func_engine import vmap_problem
from initlab.training.loop import TrainConfig
from initlab.training.mlp_engine import DEFAULT_MEMORY_BUDGET, mlp_layout

EFFICIENCY = {"mlp": 0.5, "func": 0.3, "single": 0.25}  # fraction of the matmul speed each engine attains
STEP_OVERHEAD = {"mlp": 4e-4, "func": 2e-3, "single": 6e-4}  # seconds per optimizer step per chunk (per run: single)
RUN_OVERHEAD = 0.02  # seconds per run: build, init, commit, per-epoch bookkeeping
GROUP_OVERHEAD = 0.3  # seconds per chunk: data split and shaping, engine checks


def compare_spec(params: dict, spec: SweepSpec, inits=None):
    """The :class:`initlab.experiments.compare.CompareSpec` that builds this run's model (``build_model``)."""

    train = TrainConfig.from_dict(params)
    common = dict(inits=tuple(inits or (params["init"],)), dataset=params["dataset"], data_dir=params["data_dir"],
                  normalize=params["normalize"], train=train, device=spec.device, engine=spec.engine, probe=False)
    if params["width"] is not None:  # initlab's MLP: exactly what `compare --depth --width` builds
        return CompareSpec(hidden=(params["width"],) * params["depth"], activation=params["activation"], **common)
    return CompareSpec(model=params["model"], **common)


def split_sizes(dataset: str, val_fraction: float) -> tuple[int, int, int]:
    """(kept train, validation, test) example counts (the stratified split rounds per class: ±classes)."""
    n_train, n_test, _ = KNOWN_SIZES[dataset]
    n_val = int(round(val_fraction * n_train))
    return n_train - n_val, n_val, n_test


def meta_dataset(dataset: str, val_fraction: float):
    """A :class:`initlab.data.Dataset` of the right shapes on the ``meta`` device (nothing allocated):
    x_train the kept training examples, x_test the held-out set the engines evaluate each epoch."""
    n_tr, n_val, n_test = split_sizes(dataset, val_fraction)
    shape = KNOWN_SIZES[dataset][2]
    d = math.prod(shape)
    held = n_val or n_test
    return Dataset(dataset, torch.empty(n_tr, d, device="meta"), torch.empty(n_tr, dtype=torch.int64, device="meta"),
                   torch.empty(held, d, device="meta"), torch.empty(held, dtype=torch.int64, device="meta"), 10, shape)


@dataclass
class GroupPlan:
    """One engine group: its runs, the engine, chunking, memory and time."""

    key: str
    runs: list[dict]
    engine: str  # mlp | func | single
    why: str | None  # why not batched, if so
    cap: int  # models trained at once
    per_model: int  # bytes per model in training
    data_bytes: int
    flops: float  # per model-epoch (training + evaluations)
    steps: int  # optimizer steps per epoch
    seconds: float = 0.0

    @property
    def first(self) -> dict:
        return self.runs[0]

    @property
    def chunks(self) -> int:
        return -(-len(self.runs) // self.cap)

    @property
    def memory(self) -> int:
        return min(self.cap, len(self.runs)) * self.per_model + self.data_bytes


@dataclass
class SweepPlan:
    spec: SweepSpec
    runs: list[dict]
    groups: list[GroupPlan]
    gflops: float  # measured matmul speed, GFLOP/s
    hashes: list[str] = field(default_factory=list)

    @property
    def model_epochs(self) -> int:
        return sum(r["epochs"] for r in self.runs)

    @property
    def seconds(self) -> float:
        return sum(g.seconds for g in self.groups)

    @property
    def memory(self) -> int:
        return max((g.memory for g in self.groups), default=0)

    def caps(self) -> dict[str, int]:
        return {g.key: g.cap for g in self.groups}

    def table(self) -> pd.DataFrame:
        """One row per engine group: what varies inside it and what it costs."""
        rows = []
        for i, g in enumerate(self.groups):
            f = g.first
            vary = {k: sorted({r[k] for r in g.runs}, key=str) for k in ("init", "lr", "momentum", "seed")}
            rows.append({"group": i + 1, "model": f["model"], "dataset": f["dataset"], "optimizer": f["optimizer"],
                         "batch_size": f["batch_size"], "epochs": f["epochs"], "runs": len(g.runs),
                         "inits": len(vary["init"]), "lrs": len(vary["lr"]), "momenta": len(vary["momentum"]),
                         "seeds": len(vary["seed"]), "engine": g.engine, "at_once": min(g.cap, len(g.runs)),
                         "chunks": g.chunks, "memory": g.memory, "seconds": g.seconds, "why": g.why})
        return pd.DataFrame(rows)


def matmul_gflops(seconds: float = 0.2) -> float:
    """float32 matmul speed of this machine now (GFLOP/s), on a layer-sized product."""
    a, b = torch.randn(256, 784), torch.randn(784, 256)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * 256 * 784 * 256 * reps / (time.perf_counter() - t0) / 1e9


def _engine_and_flops(cs, data, spec: SweepSpec) -> tuple[str, str | None, float]:
    """Engine kind (as ``experiment.choose_engine`` picks it) and forward FLOPs per example."""

    if cs.model is None:
        sizes = (data.in_features, *cs.hidden, data.num_classes)
        fwd = sum(2 * i * o for i, o in zip(sizes[:-1], sizes[1:]))
        return ("single" if spec.engine == "single" else "mlp"), None, float(fwd)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_model(cs.model, image_in_shape(data), data.num_classes)
    shape = input_shape_of(model, data.image_shape)
    x = torch.zeros(4, *shape)
    y = torch.zeros(4, dtype=torch.int64)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x[:2])
        fwd = counter.get_total_flops() / 2
    except Exception:  # noqa: BLE001 - an op the counter does not know: count parameters instead
        fwd = 2.0 * sum(p.numel() for p in model.parameters())
    if spec.engine == "single":
        return "single", None, float(fwd)

    try:
        mlp_layout(model)
        return "mlp", None, float(fwd)
    except ValueError:
        pass

    why = vmap_problem(model, x, y)
    return ("func", None, float(fwd)) if why is None else ("single", why, float(fwd))


def make_plan(spec: SweepSpec, *, gflops: float | None = None, max_group: int | None = None) -> SweepPlan:
    """Engine groups, memory and a time estimate for ``spec`` (nothing loaded, nothing trained).

    ``max_group`` caps the models trained at once (default: as many as the memory budget allows).
    """

    runs = spec.runs()
    by_key: dict[str, list[dict]] = {}
    for r in runs:
        by_key.setdefault(group_key(r), []).append(r)
    speed = gflops if gflops is not None else matmul_gflops()
    groups = []
    for key, members in by_key.items():
        f = members[0]
        cs = compare_spec(f, spec, inits=dict.fromkeys(r["init"] for r in members))
        data = meta_dataset(f["dataset"], f["val_fraction"])
        engine, why, fwd = _engine_and_flops(cs, data, spec)
        est = estimate_memory(dataclasses.replace(cs, seeds=1, inits=cs.inits[:1]), data)
        cap = 1 if engine == "single" else max(1, DEFAULT_MEMORY_BUDGET // max(1, est["per_model"]))
        if max_group is not None:
            cap = max(1, min(cap, int(max_group)))
        n_tr, n_val, n_test = split_sizes(f["dataset"], f["val_fraction"])
        evals = (n_val + n_test) if n_val else n_test
        if f["train_eval"] == "every":
            evals += n_tr
        flops_epoch = fwd * (3 * n_tr + evals)
        steps = -(-n_tr // f["batch_size"])
        d = data.in_features
        g = GroupPlan(key, members, engine, why, cap, int(est["per_model"]), 4 * d * (n_tr + n_val + n_test) + 16 * (n_tr + n_val + n_test),
                      flops_epoch, steps)
        per_epoch = g.flops * len(members) / (speed * 1e9 * EFFICIENCY[engine])
        overhead = STEP_OVERHEAD[engine] * steps * (len(members) if engine == "single" else g.chunks)
        g.seconds = f["epochs"] * (per_epoch + overhead) + RUN_OVERHEAD * len(members) + GROUP_OVERHEAD * g.chunks
        if f["train_eval"] == "final":
            g.seconds += fwd * n_tr * len(members) / (speed * 1e9 * EFFICIENCY[engine])
        groups.append(g)
    return SweepPlan(spec, runs, groups, speed, [run_hash(r) for r in runs])
