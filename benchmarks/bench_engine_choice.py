"""The default engine choice against the forced engines: ``compare`` per zoo model, same process, one run.

Run: ``PYTHONPATH=src python benchmarks/bench_engine_choice.py [--models cnn,transformer] [--dataset digits]
[--epochs 1] [--seeds 3] [--train-size N] [--device cpu|cuda] [--threads N] [--rounds 1]``.

For each model, ``run_compare`` trains the seed's four inits × ``--seeds`` seeds (K = 12 by default)
with ``engine="single"``, ``"batched"`` and ``"auto"`` (the default: each engine timed for a few
steps on the real shapes, the fastest trains; ``initlab.training.choice``), probe off, in rounds
that rotate the order so load from other processes falls on all three. Printed per model: the
seconds inside ``run_compare`` (best round; loading the data and importing are not counted),
auto's choice with its measured rates, and ``auto / fastest forced`` as a speed ratio (≥ 1.0: the
default is as fast as the better of the forced engines; the measurement itself is part of auto's
time). Numbers are absolute for this machine; the ratios are what carries to another one. On a
GPU (``--device cuda``) the same script runs unchanged and reports the same columns.

``--threads-ab``: instead, the batched MLP engine's step at K = 12 (784-128-10, batch 64, SGD, synthetic
data) with torch's thread count and with one thread, alternating in one process (three rounds of
50 steps, best and median), each against a 2048³ sgemm with the same thread count: what a machine
shared with other processes does to OpenMP's small parallel regions (docs/performance.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from initlab.data import load_dataset
from initlab.experiments.compare import CompareSpec, Reporter, run_compare
from initlab.training.choice import thread_label
from initlab.training.loop import TrainConfig
from initlab.training.memory import keep_freed_memory
from machine import machine_info, sync  # benchmarks/machine.py: the machine line, the GPU clock barrier

ENGINES = ("single", "batched", "auto")


class Quiet(Reporter):
    def note(self, message: str) -> None:  # auto's note is printed from the result instead
        pass




def timed(spec: CompareSpec, data, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    res = run_compare(spec, data=data, reporter=Quiet())
    sync(device)
    return time.perf_counter() - t0, res


def threads_ab(rounds: int = 3, steps: int = 50) -> None:
    from initlab.models import mlp
    from initlab.training.mlp_engine import Population

    k, b = 12, 64
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(b * 200, 784, generator=g), torch.randint(0, 10, (b * 200,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = [mlp(784, (128,), 10) for _ in range(k)]
    step = Population(models, TrainConfig(), list(range(k))).stepper(x, y)
    a, m = torch.randn(2048, 2048), torch.randn(2048, 2048)
    flops = k * (4 * b * (784 * 128 + 128 * 10) + 2 * b * 128 * 10)

    def ms():
        for _ in range(5):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps * 1e3

    def peak():
        a @ m
        t0 = time.perf_counter()
        for _ in range(5):
            a @ m
        return 2 * 2048 ** 3 * 5 / (time.perf_counter() - t0) / 1e9

    default = torch.get_num_threads()
    times = {default: [], 1: []}
    peaks = {default: [], 1: []}
    for _ in range(rounds):
        for threads in dict.fromkeys((default, 1)):
            torch.set_num_threads(threads)
            times[threads].append(ms())
            peaks[threads].append(peak())
    torch.set_num_threads(default)
    for threads in dict.fromkeys((default, 1)):
        best = min(times[threads])
        print(f"threads {threads}: ms/step best {best:.2f} median {sorted(times[threads])[rounds // 2]:.2f}; "
              f"{flops / best / 1e6:.1f} GFLOP/s; sgemm 2048³ best {max(peaks[threads]):.1f} GFLOP/s "
              f"({flops / best / 1e6 / max(peaks[threads]):.0%} of it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn,resmlp,resnet,transformer", help="zoo specs, comma-separated")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--epochs", type=int, default=2, help="2: the issue's digits command (552 steps: auto measures)")
    ap.add_argument("--seeds", type=int, default=3, help="runs per init; 4 inits, so K = 4 × seeds")
    ap.add_argument("--train-size", type=int, default=0, help="first N training examples only (0: all)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per model (rotating engine order); best kept")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--threads-ab", action="store_true", help="time the MLP engine's step with 1 thread vs torch's")
    args = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    if args.threads_ab:
        print(machine_info(torch.device("cpu")))
        threads_ab()
        print(machine_info(torch.device("cpu")))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_info(device))
    data = load_dataset(args.dataset)
    if args.train_size:
        data = dataclasses.replace(data, x_train=data.x_train[:args.train_size], y_train=data.y_train[:args.train_size])
    print(f"{args.dataset}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test; {args.epochs} epoch(s); "
          f"K = {4 * args.seeds}; device {device}; probe off")
    print(f"{'model':26s} {'single s':>9s} {'batched s':>10s} {'auto s':>8s} {'auto/fastest':>13s}  auto's choice")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        best = {e: float("inf") for e in ENGINES}
        choice = None
        for r in range(args.rounds):
            for engine in ENGINES[r % 3:] + ENGINES[:r % 3]:
                spec = CompareSpec(dataset=args.dataset, seeds=args.seeds, model=model, engine=engine, probe=False,
                                   device=args.device, train=TrainConfig(epochs=args.epochs))
                seconds, res = timed(spec, data, device)
                best[engine] = min(best[engine], seconds)
                if engine == "auto":
                    choice = res.engine
        fastest = min(best["single"], best["batched"])
        rates = ", ".join(f"{k} {v:.3g}" for k, v in sorted(choice["rates"].items(), key=lambda kv: -kv[1]))
        print(f"{model:26s} {best['single']:9.2f} {best['batched']:10.2f} {best['auto']:8.2f} "
              f"{fastest / best['auto']:12.2f}×  {thread_label(choice['engine'], choice['threads'])}"
              + (f" ({rates} model-steps/s)" if rates else f" ({choice['reason']})"))
    print(machine_info(device))


if __name__ == "__main__":
    main()
