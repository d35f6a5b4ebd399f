"""Training throughput: the seed's pipeline vs the single-model loop vs the batched engine, against sgemm.

Run: ``PYTHONPATH=src python benchmarks/bench_train.py [--dataset fashion-mnist] [--steps 300] [--device cuda]``.
Every path trains the seed's 784-128-10 ReLU MLP (SGD lr 0.01, batch 64) on the same data in this
one process; each is timed over ``--steps`` optimizer steps (after a warm-up) and converted to
model-epochs per second (one epoch = ceil(n_train / 64) steps). Evaluation is not timed here; the
end-to-end ``initlab compare`` figure in docs/performance.md includes it. With ``--device cuda`` every
path, the sgemm peaks included, runs on the GPU (the seed pipeline's DataLoader still batches on the
CPU and copies each batch over, as the notebook would), timed with ``torch.cuda.synchronize``
around each measurement; the columns and ratios are the same.

The same-run sgemm peaks (torch.mm at the layer shapes and 2048³, with torch's intra-op threads, and
2048³ with one thread) are printed first; "of peak" is each path's GFLOP/s against the best of the
first four. On a CPU with several intra-op threads the K = 12 engine is also timed with one intra-op
thread (c1) and split into ``--workers`` parts side by side, one worker thread of one intra-op
thread each (d; ``train_population(..., workers=N)``, :mod:`initlab.training.workers`).
``--skip-seed`` leaves out the seed pipeline, ``--ks ""`` the scaling table (a run of about a
minute on 2 cores: ``--skip-seed --ks "" --steps 200``).

FLOP count per step of one model, batch B, layers 784→128→10 (only what training must compute):
forward 2B(784·128 + 128·10); backward: weight grads 2B(784·128 + 128·10) plus the input grad of
layer 2, 2B·128·10 (layer 1's input grad is not needed). Total = 4B·101,632 + 2B·1,280 ≈ 26.2 MFLOP
at B=64, i.e. 24.6 GFLOP per Fashion-MNIST epoch (the 3× forward convention would say 36.6).
"""
from __future__ import annotations

import argparse
import math
import resource
import time

import torch
from torch import nn

from initlab import load_dataset
from initlab.training.choice import intra_op_threads
from initlab.training.mlp_engine import train_population
from initlab.experiments.compare import CompareSpec, build_model
from initlab.schemes import parse_scheme
from initlab.training.loop import TrainConfig, train_model
from machine import machine_info, sync  # benchmarks/machine.py: the machine line, the GPU clock barrier

B, IN, HID, OUT = 64, 784, 128, 10


def flops_per_step(batch=B, sizes=(IN, HID, OUT)):
    fwd = sum(2 * batch * i * o for i, o in zip(sizes[:-1], sizes[1:]))
    input_grads = sum(2 * batch * i * o for i, o in zip(sizes[1:-1], sizes[2:]))
    return 2 * fwd + input_grads


DEVICE = torch.device("cpu")  # set by --device






def sgemm(m, k, n, seconds=1.0, threads=None):
    """GFLOP/s of torch.mm on (m,k)@(k,n) float32 on DEVICE (TF32 off: plain float32, as training runs),
    with ``threads`` intra-op threads (None: torch's)."""
    a, b = torch.randn(m, k, device=DEVICE), torch.randn(k, n, device=DEVICE)
    with intra_op_threads(threads):
        for _ in range(3):
            a @ b
        sync(DEVICE)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                a @ b
            sync(DEVICE)
            reps += 10
        return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


class SeedDataset(torch.utils.data.Dataset):
    """The seed notebook's data path: one uint8 image per item through ToTensor + Normalize((0.5,), (0.5,))."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div(255.0).unsqueeze(0)  # ToTensor: (1, 28, 28) in [0, 1]
        return (x - 0.5) / 0.5, int(self.labels[i])  # Normalize((0.5,), (0.5,))


def time_seed_pipeline(images, labels, steps):
    loader = torch.utils.data.DataLoader(SeedDataset(images, labels), batch_size=B, shuffle=True)
    model = nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, OUT)).to(DEVICE)
    crit, opt = nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01)
    it = iter(loader)
    t0 = None
    for s in range(steps + 10):
        if s == 10:
            sync(DEVICE)
            t0 = time.perf_counter()
        inputs, targets = next(it)
        inputs, targets = inputs.to(DEVICE), targets.to(DEVICE)
        loss = crit(model(inputs.view(inputs.shape[0], -1)), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(DEVICE)
    return (time.perf_counter() - t0) / steps


def subset(data, n_train, n_test=64):
    """The first ``n_train`` training examples (and ``n_test`` test ones), on DEVICE."""
    return type(data)(name=data.name, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                      x_test=data.x_test[:n_test], y_test=data.y_test[:n_test], num_classes=data.num_classes,
                      image_shape=data.image_shape).to(DEVICE)


def time_single(data, steps):
    spec = CompareSpec(dataset=data.name, hidden=(HID,))
    part = subset(data, steps * B)
    train_model(build_model(spec, part, parse_scheme("he"), 0, DEVICE), subset(data, 10 * B), TrainConfig(epochs=1),
                seed=0)
    model = build_model(spec, part, parse_scheme("he"), 0, DEVICE)
    sync(DEVICE)
    t0 = time.perf_counter()
    train_model(model, part, TrainConfig(epochs=1), seed=0)
    sync(DEVICE)
    return (time.perf_counter() - t0) / steps


def time_engine(data, k, steps, inits=("zero", "random", "xavier", "he"), workers=1, threads=None):
    """Seconds per optimizer step of K models in the MLP engine (``train_population``: one population,
    or ``workers`` parts side by side), with ``threads`` intra-op threads (None: torch's)."""
    spec = CompareSpec(dataset=data.name, hidden=(HID,))
    part = subset(data, steps * B)
    runs = [(inits[i % len(inits)], i // len(inits)) for i in range(k)]
    models = [build_model(spec, part, parse_scheme(i), s, DEVICE) for i, s in runs]
    seeds = [s for _, s in runs]
    with intra_op_threads(threads):
        train_population(models, subset(data, 10 * B), TrainConfig(epochs=1), seeds, max_models=k,
                         workers=workers)  # warm-up
        sync(DEVICE)
        t0 = time.perf_counter()
        train_population(models, part, TrainConfig(epochs=1), seeds, max_models=k, workers=workers)
        sync(DEVICE)
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist | digits")
    ap.add_argument("--steps", type=int, default=300, help="timed optimizer steps per measurement")
    ap.add_argument("--seed-steps", type=int, default=200, help="timed steps of the seed pipeline (slow)")
    ap.add_argument("--ks", default="1,2,4,8,16,32,64", help="population sizes for the scaling table")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (every path and the sgemm peaks on it)")
    ap.add_argument("--workers", type=int, default=2,
                    help="the K = 12 engine also in this many parts side by side, one intra-op thread each (CPU)")
    ap.add_argument("--skip-seed", action="store_true", help="leave out the seed pipeline (slow)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 as on the CPU (torch's default, stated)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_info(DEVICE))
    data = load_dataset(args.dataset, normalize="seed")
    if data.in_features != IN:
        raise SystemExit(f"{args.dataset} has {data.in_features} inputs; this benchmark is for 784-128-10")
    n = data.x_train.shape[0]
    steps_per_epoch = math.ceil(n / B)
    f_step = flops_per_step()
    print(f"{args.dataset}: {n} train; {steps_per_epoch} steps/epoch; {f_step / 1e6:.1f} MFLOP/step/model; "
          f"{f_step * steps_per_epoch / 1e9:.1f} GFLOP/model-epoch (3x-forward convention: "
          f"{3 * 2 * B * (IN * HID + HID * OUT) * steps_per_epoch / 1e9:.1f})")

    peaks = {"64x784 @ 784x128 (fwd)": sgemm(64, 784, 128), "128x64 @ 64x784 (dW1)": sgemm(128, 64, 784),
             "768x784 @ 784x128 (12 models' fwd as one mm)": sgemm(768, 784, 128),
             "2048^3": sgemm(2048, 2048, 2048, seconds=2.0)}
    for name, g in peaks.items():
        print(f"sgemm {name:45s} {g:7.1f} GFLOP/s")
    roof = max(peaks.values())
    cpu_split = DEVICE.type == "cpu" and args.workers > 1
    one_thread = DEVICE.type == "cpu" and torch.get_num_threads() > 1
    roof1 = sgemm(2048, 2048, 2048, seconds=2.0, threads=1) if one_thread else None
    if roof1:
        print(f"sgemm {'2048^3 with 1 intra-op thread':45s} {roof1:7.1f} GFLOP/s")
    print(f"peak: {roof:.1f} GFLOP/s (the best of the above with torch's {torch.get_num_threads()} threads); "
          f"'of peak' below is against it")

    images = ((data.x_train * 0.5 + 0.5) * 255).round().to(torch.uint8).view(n, 28, 28)  # back to the raw bytes
    rows = []
    t_seed = None if args.skip_seed else time_seed_pipeline(images, data.y_train, args.seed_steps)
    if t_seed is not None:
        rows.append(("(a) seed pipeline (DataLoader, per-sample transform)", 1, t_seed))
    rows.append(("(b) single-model loop (train_model)", 1, time_single(data, args.steps)))
    rows.append(("(c) batched engine, 4 inits x 3 seeds", 12, time_engine(data, 12, args.steps)))
    if one_thread:
        rows.append(("(c1) the same, 1 intra-op thread", 12, time_engine(data, 12, args.steps, threads=1)))
    if cpu_split:
        rows.append((f"(d) the same, {args.workers} worker threads x 1 intra-op thread", 12,
                     time_engine(data, 12, args.steps, workers=args.workers)))
    print(f"\n{'path':55s} {'K':>3s} {'s/model-epoch':>14s} {'model-epochs/s':>15s} {'x seed':>7s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for name, k, t_step in rows:
        per_model_epoch = t_step * steps_per_epoch / k
        gflops = f_step * k / t_step / 1e9
        xseed = f"{t_seed / (t_step / k):7.1f}" if t_seed is not None else f"{'-':>7s}"
        print(f"{name:55s} {k:3d} {per_model_epoch:14.3f} {1 / per_model_epoch:15.2f} "
              f"{xseed} {gflops:8.1f} {gflops / roof:8.0%}")

    if not args.ks:
        print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; {machine_info(DEVICE)}")
        return
    print(f"\nscaling of the engine with K ({args.steps} steps each):")
    print(f"{'K':>3s} {'ms/step':>8s} {'s/model-epoch':>14s} {'model-epochs/s':>15s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for k in [int(v) for v in args.ks.split(",")]:
        t_step = time_engine(data, k, args.steps)
        per_model_epoch = t_step * steps_per_epoch / k
        gflops = f_step * k / t_step / 1e9
        print(f"{k:3d} {t_step * 1e3:8.2f} {per_model_epoch:14.3f} {1 / per_model_epoch:15.2f} {gflops:8.1f} {gflops / roof:8.0%}")
    gpu = (f"; peak GPU memory {torch.cuda.max_memory_allocated(DEVICE) / 2**20:.0f} MiB" if DEVICE.type == "cuda"
           else "")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB{gpu}; {machine_info(DEVICE)}")


if __name__ == "__main__":
    main()
