"""Sweep cost per model-epoch vs ``compare``'s, on the seed's network, as one batched group.

Run: ``PYTHONPATH=src python benchmarks/bench_sweep.py [--dataset fashion-mnist] [--epochs 1] [--reps 2]``.

The sweep is the tuned-lr grid of the issue: 4 inits (zero, random, xavier, he) × 6 learning rates
(0.001 … 0.3) × 3 seeds = 72 runs of the 784-128-10 ReLU MLP, SGD batch 64, trained as one engine
group (one ``Population`` of 72 models), with a 10% validation split, test accuracy evaluated per
run per epoch, and every run committed to a fresh SQLite store. ``compare`` gets the same number of
models at once (4 inits × 18 seeds = 72 runs, one group, ``--no-probe``), and its usual size (4 × 3).
Cost per model-epoch = wall time / (runs × epochs), each best of ``--reps`` alternating repetitions
(the machine is shared: the minimum is the least disturbed). The sweep trains on 90% of the
training set, so its cost per trained example is also shown.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from initlab import load_dataset
from initlab.experiments.compare import CompareSpec, run_compare
from initlab.experiments.sweeps import SweepSpec, run_sweep
from initlab.training.loop import TrainConfig
from machine import machine_info  # benchmarks/machine.py: the machine line, the GPU clock barrier

LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
INITS = ("zero", "random", "xavier", "he")




def time_compare(data, seeds: int, epochs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``compare`` with 4 inits × ``seeds`` seeds at lr 0.01."""
    spec = CompareSpec(inits=INITS, dataset=data.name, seeds=seeds, probe=False, device="cpu",
                       train=TrainConfig(epochs=epochs))
    t0, c0 = time.perf_counter(), time.process_time()
    run_compare(spec, data=data)
    return time.perf_counter() - t0, time.process_time() - c0


def time_sweep(data, epochs: int, folder: Path, rep: int) -> tuple[float, float, dict]:
    """(wall, CPU) seconds of the 72-run sweep into a fresh store, and what it trained."""
    spec = SweepSpec({"inits": list(INITS), "lr": list(LRS), "seeds": 3, "epochs": epochs, "dataset": data.name},
                     name=f"bench-{rep}", device="cpu")
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_sweep(spec, folder / f"bench{rep}.db", data=data)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert res.complete and res.trained == 72, res.counts
    info = {"mlp engine": int(res.runs["engine"].eq("mlp").sum()), "diverged": int(res.counts["diverged"]),
            "model-epochs trained": int(res.runs["epochs_done"].sum())}
    return wall, cpu, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=["digits", "mnist", "fashion-mnist"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_info())
    data = load_dataset(args.dataset)
    n = data.x_train.shape[0]
    print(f"{args.dataset}: {n} train / {data.x_test.shape[0]} test; {data.in_features}-128-10 ReLU MLP, SGD batch 64, "
          f"{args.epochs} epoch(s), best of {args.reps}")
    keys = ("compare 4x18 (72 runs)", "compare 4x3 (12 runs)", "sweep 4x6x3 (72 runs)")
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):  # alternating, so a busy spell of the machine hits all three
            for key, fn in ((keys[0], lambda: time_compare(data, 18, args.epochs)),
                            (keys[2], lambda: time_sweep(data, args.epochs, Path(tmp), rep)),
                            (keys[1], lambda: time_compare(data, 3, args.epochs))):
                out = fn()
                runs = 12 if key == keys[1] else 72
                wall[key].append(out[0] / (runs * args.epochs))
                cpu[key].append(out[1] / (runs * args.epochs))
                if key == keys[2]:
                    info = out[2]
            print(f"  rep {rep + 1}: " + ", ".join(f"{k} {wall[k][-1] * 1e3:.0f} ms (cpu {cpu[k][-1] * 1e3:.0f})"
                                                   for k in keys), flush=True)
    print(f"\nsweep: {info}")
    print("cost per model-epoch, best of reps: wall (CPU time of this process)")
    for k in keys:
        print(f"  {k:24s} {min(wall[k]) * 1e3:8.1f} ms  ({min(cpu[k]) * 1e3:.1f} ms)")
    s72, c72, c12 = (min(wall[k]) for k in (keys[2], keys[0], keys[1]))
    sc, cc = min(cpu[keys[2]]), min(cpu[keys[0]])
    trained = info["model-epochs trained"] / (72 * args.epochs)
    print(f"sweep / compare (72 models at once): {s72 / c72:.2f}x wall, {sc / cc:.2f}x CPU per model-epoch "
          f"(target <= 1.25x); per model-epoch actually trained (diverged runs stop early): "
          f"{s72 / trained / c72:.2f}x wall; per trained example (the sweep trains on 90%): "
          f"{s72 / trained / 0.9 / c72:.2f}x wall")
    print(f"sweep / compare (its default 12 runs): {s72 / c12:.2f}x wall")
    print(machine_info())


if __name__ == "__main__":
    main()
