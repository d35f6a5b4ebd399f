"""Both cores the way small models want: one process with torch's intra-op threads vs one thread vs the
population split across worker threads of one intra-op thread each, per zoo model, in one run.

Run: ``PYTHONPATH=src python benchmarks/bench_workers.py [--models mlp,cnn] [--dataset digits] [--seeds 3]
[--rounds 3] [--epochs 0] [--device cpu|cuda]``.

For each model, K = 4 inits × ``--seeds`` (12) copies step on fixed batches of the real training set with
the engine ``compare`` would batch them with (the MLP engine for ``mlp``, the torch.func engine for the
others), timed by :func:`initlab.training.choice.choose` itself (alternating rounds, best round, no
pruning, no budget) as three candidates: torch's intra-op threads (``mlp``), one intra-op thread
(``mlp/1t``) and ``--workers`` parts side by side, one worker thread of one intra-op thread each
(``mlp/2w``). Printed: model-steps per second of each and the split's ratio to the better of the two
one-process settings (> 1: the split is faster). ``--epochs N`` also trains the K models for N epochs
end to end (``train_population`` / ``train_func_population``, evaluation included) with workers=1 and
``--workers``, alternating, and prints both times: the split pays its hand-over once per epoch there,
once per step in the stepped rates (which therefore err against it). Load average at start and end.
On a GPU (``--device cuda``) the same columns are printed (worker threads then share one device).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from initlab.data import load_dataset
from initlab.experiments.compare import CompareSpec, new_model, prepare_data
from initlab.training.choice import choose, engine_candidates, intra_op_threads
from initlab.training.func_engine import train_func_population
from initlab.training.loop import TrainConfig
from initlab.training.memory import keep_freed_memory
from initlab.training.mlp_engine import train_population
from machine import machine_info, sync  # benchmarks/machine.py: the machine line, the GPU clock barrier

ZOO = ("mlp", "cnn", "resmlp", "resnet", "transformer")






def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ZOO), help=f"comma-separated zoo specs (default {','.join(ZOO)})")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", type=int, default=3, help="runs per init: K = 4 × seeds")
    ap.add_argument("--workers", type=int, default=2, help="parts side by side (default 2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=0.2, help="length of a timed round")
    ap.add_argument("--epochs", type=int, default=0, help="also train end to end for this many epochs")
    ap.add_argument("--train-size", type=int, default=None, help="first N training examples (end-to-end runs)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    print(machine_info(device))
    loaded = load_dataset(args.dataset)
    threads = (None, 1) if device.type == "cpu" and torch.get_num_threads() > 1 else (None,)
    print(f"\n{'model':12s} {'engine':6s} {'K':>3s} " + " ".join(f"{n:>10s}" for n in ("torch thr", "1 thread",
          f"{args.workers}w x 1t")) + "   split / best one-process  (model-steps/s)")
    for name in args.models.split(","):
        spec = CompareSpec(model=name, dataset=args.dataset, seeds=args.seeds, probe=False,
                           train=TrainConfig(epochs=max(1, args.epochs)))
        data = prepare_data(spec, loaded).to(device)
        if args.train_size:
            data = type(data)(name=data.name, x_train=data.x_train[:args.train_size],
                              y_train=data.y_train[:args.train_size], x_test=data.x_test, y_test=data.y_test,
                              num_classes=data.num_classes, image_shape=data.image_shape)
        k = len(spec.inits) * spec.seeds
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model = new_model(spec, data, 0).to(device)
        models = [model] + [copy.deepcopy(model) for _ in range(k - 1)]
        kind = "mlp" if name == "mlp" else "func"
        cands = engine_candidates([kind], models, data, spec.train, threads, workers=(args.workers,))
        c = choose(cands, rounds=args.rounds, min_seconds=args.min_seconds, prune=float("inf"))
        rates = dict(c.rates)
        one = max(r for n, r in rates.items() if not n.endswith("w"))
        split = rates.get(f"{kind}/{args.workers}w")
        cols = [rates.get(kind), rates.get(f"{kind}/1t"), split]
        print(f"{name:12s} {kind:6s} {k:3d} " + " ".join(f"{r:10.1f}" if r else f"{'-':>10s}" for r in cols)
              + (f"   {split / one:.2f}x" if split else ""), flush=True)
        del cands, c
        if args.epochs:
            train = train_population if kind == "mlp" else train_func_population
            setups = {"torch threads": (1, None), **({"1 thread": (1, 1)} if len(threads) > 1 else {}),
                      f"{args.workers} workers": (args.workers, None)}
            times: dict[str, list[float]] = {label: [] for label in setups}
            for _ in range(max(1, args.rounds - 1)):
                for label, (w, t) in setups.items():
                    fresh = [copy.deepcopy(model) for _ in range(k)]
                    sync(device)
                    t0 = time.perf_counter()
                    with intra_op_threads(t):
                        train(fresh, data, spec.train, list(range(k)), max_models=k, workers=w)
                    sync(device)
                    times[label].append(time.perf_counter() - t0)
            best = {label: min(v) for label, v in times.items()}
            one = min(v for label, v in best.items() if not label.endswith("workers"))
            print(f"{'':12s} end to end, {args.epochs} epoch(s), best of {len(times[label])}: "
                  + ", ".join(f"{label} {v:.2f} s" for label, v in best.items())
                  + f"; split / best one-process {one / best[f'{args.workers} workers']:.2f}x", flush=True)
    print(f"\n{machine_info(device)}")


if __name__ == "__main__":
    main()
