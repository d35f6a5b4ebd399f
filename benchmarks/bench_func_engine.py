"""Training throughput of a small CNN: the single loop vs the torch.func population engine, against peak.

Run: ``PYTHONPATH=src python benchmarks/bench_func_engine.py [--models 12] [--steps 40] [--rounds 3]
[--batch 64] [--size 28] [--threads N] [--malloc tuned|default] [--channels-last] [--device cuda]``.

Model: conv 1→16 (3×3, pad 1), ReLU, maxpool 2 → conv 16→32, ReLU, maxpool 2 → conv 32→32, ReLU →
global average pool → Linear 32→10, on synthetic ``size``×``size`` inputs (N, 1, size, size), SGD
lr 0.01 (or ``--momentum``/``--optimizer``). In each round both paths train ``--models`` models for
one epoch of ``--steps`` steps through their public entry points (``train_model`` K times;
``train_func_population`` once), after a warm-up; the test set is one batch, so evaluation is a
small share of the time. "step only" times ``FuncPopulation._step`` alone on a fixed batch (no
gather, no evaluation). Rounds alternate the paths so that load from other processes hits both;
the best and the median round are reported. Reported: model-steps per second, the speedup, and
GFLOP/s, with the FLOPs of one model step (forward and backward) counted by
``torch.utils.flop_counter.FlopCounterMode``. Peak figures from the same run: a 2048³ sgemm and a
large 3×3 conv2d forward (64×64×56×56). With ``--device cuda`` models, data and the peaks run on the
GPU and every timing waits for the queue (``torch.cuda.synchronize``); the columns are the same.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from initlab.data import Dataset
from initlab.training.func_engine import FuncPopulation, train_func_population
from initlab.training.loop import TrainConfig, train_model
from machine import machine_info, sync  # benchmarks/machine.py: the machine line, the GPU clock barrier


def small_cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)  # benchmark only: the init values do not matter, their shapes do
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS (``mallopt``).

    Every op allocates its output; above glibc's mmap threshold a freed block goes back to the
    kernel, and the next step faults its pages in again. On this VM a page fault costs so much that
    a 7 ms CNN step takes 600 ms; both paths are measured with the same allocator setting.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    # no mmap at all (the batched engine's tensors exceed mmap's 32 MiB threshold cap), never trim
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 40)
                and libc.mallopt(m_top_pad, 256 << 20))


DEVICE = torch.device("cpu")  # set by --device






def rate(fn, seconds: float = 1.0) -> float:
    """Calls of ``fn`` per second (after 2 warm-up calls; GPU work waited for)."""
    fn(), fn()
    sync(DEVICE)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        reps += 1
        if reps % 10 == 0:
            sync(DEVICE)
    sync(DEVICE)
    return reps / (time.perf_counter() - t0)


def peaks() -> tuple[float, float]:
    """GFLOP/s of a 2048³ sgemm and of a 3×3 conv2d forward, batch 64, 64→64 channels, 56×56."""
    a, b = torch.randn(2048, 2048, device=DEVICE), torch.randn(2048, 2048, device=DEVICE)
    mm = 2 * 2048 ** 3 * rate(lambda: a @ b) / 1e9
    x, w = torch.randn(64, 64, 56, 56, device=DEVICE), torch.randn(64, 64, 3, 3, device=DEVICE)
    conv = 2 * 64 * 64 * 64 * 9 * 56 * 56 * rate(lambda: nn.functional.conv2d(x, w, padding=1)) / 1e9
    return mm, conv


def step_flops(batch: int, side: int = 28) -> int:
    """FLOPs of one training step of one model (forward + backward), as FlopCounterMode counts them."""
    model = small_cnn(0)
    x, y = torch.randn(batch, 1, side, side), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", "-k", type=int, default=12, help="K, models trained together")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per model per round (one epoch)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating single/batched rounds; best and median reported")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=28, help="input side (28: MNIST-sized; 8: digits-sized)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last (both paths)")
    ap.add_argument("--malloc", choices=["default", "tuned"], default="tuned",
                    help="tuned: glibc keeps freed memory (see tune_malloc); default: glibc as configured")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (models, data and peaks on it)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":  # plain float32, as on the CPU (torch's defaults, stated)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    tuned = args.malloc == "tuned" and tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_info(DEVICE) + f"; glibc malloc {'tuned (mallopt: no trim, no mmap)' if tuned else 'default'}")
    k, side, bsz = args.models, args.size, args.batch
    cl = torch.channels_last if args.channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    n = args.steps * bsz
    x = torch.randn(n, 1, side, side, generator=g).contiguous(memory_format=cl).to(DEVICE)
    y = torch.randint(0, 10, (n,), generator=g).to(DEVICE)
    data = Dataset("synthetic", x, y, x[:bsz], y[:bsz], 10, (side, side))
    cfg = TrainConfig(epochs=1, batch_size=bsz, lr=0.01, momentum=args.momentum, optimizer=args.optimizer)

    def models():
        return [small_cnn(s).to(DEVICE, memory_format=cl) for s in range(k)]

    flops = step_flops(bsz, side)
    warm = Dataset("warm", x[: 4 * bsz], y[: 4 * bsz], x[:bsz], y[:bsz], 10, (side, side))
    train_model(small_cnn(0).to(DEVICE, memory_format=cl), warm, cfg, seed=0)
    train_func_population(models(), warm, cfg, list(range(k)), max_models=k)

    # the step alone (no data gather, no evaluation, no per-epoch bookkeeping)
    pop = FuncPopulation(models(), cfg, list(range(k)))
    xb, yb = x[: k * bsz].view(k, bsz, 1, side, side), y[: k * bsz].view(k, bsz)
    alive, out = torch.ones(k, dtype=torch.bool, device=DEVICE), torch.empty(k, device=DEVICE)
    n_state = 2 if args.optimizer == "adam" else (1 if args.momentum else 0)
    state = [{name: torch.zeros_like(p) for name, p in pop.params.items()} for _ in range(n_state)]
    steps = [0]

    def one_step():
        steps[0] += 1
        with torch.no_grad():
            pop._step(xb, yb, alive, steps[0], state, out)

    single, batched, step_only = [], [], []
    for _ in range(args.rounds):
        ms = models()
        sync(DEVICE)
        t0 = time.perf_counter()
        for s, m in enumerate(ms):
            train_model(m, data, cfg, seed=s)
        sync(DEVICE)
        single.append(k * args.steps / (time.perf_counter() - t0))
        ms = models()
        sync(DEVICE)
        t0 = time.perf_counter()
        train_func_population(ms, data, cfg, list(range(k)), max_models=k)
        sync(DEVICE)
        batched.append(k * args.steps / (time.perf_counter() - t0))
        step_only.append(k * rate(one_step, 1.0))

    mm, conv = peaks()
    print(f"model: small CNN 1→16→32→32 (3×3), maxpool, GAP, Linear 32→10; {side}×{side} inputs; batch {bsz}; "
          f"K={k}; {args.optimizer} momentum {args.momentum}; channels_last {args.channels_last}; "
          f"{args.steps} steps × {args.rounds} rounds")
    print(f"FLOPs per model step (forward + backward, FlopCounterMode): {flops / 1e6:.1f} MFLOP")
    print(f"peak this run: sgemm 2048³ {mm:.1f} GFLOP/s; conv2d 64×64×56×56 3×3 forward {conv:.1f} GFLOP/s")
    best_single = max(single)
    for name, rates in (("single loop (train_model × K)", single), ("func engine (train_func_population)", batched),
                        ("func engine step only", step_only)):
        best, med = max(rates), statistics.median(rates)
        print(f"{name:37s} best {best:7.1f} model-steps/s ({best * flops / 1e9:6.2f} GFLOP/s, "
              f"{best / best_single:4.2f}× single)  median {med:7.1f}")


if __name__ == "__main__":
    main()
