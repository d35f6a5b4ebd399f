"""Peak memory per rank of meta -> FSDP2 -> ``initialize_sharded`` for a GPT-style transformer.

Run: ``.venv/bin/python benchmarks/bench_sharded_rss.py [--world 2] [--width 1024] [--layers 24] [--vocab 50257]``.

Each rank (gloo, CPU, launched by torch.multiprocessing) builds the model on ``meta``, wraps every
block and the root with ``fully_shard``, calls ``to_empty(device="cpu")`` and
``initialize_sharded(model, {"Linear": "normal(std=0.02)", "Embedding": "normal(std=0.02)"}, seed=0)``.
Printed per rank: RSS before ``to_empty`` (imports, process group, the meta model), the peak RSS
(``ru_maxrss``) at the end, the growth between them, its local shard's bytes, and the growth as a
fraction of the full model's parameter bytes (the target: at most 1/world + 10%), with the time of
``to_empty`` + ``initialize_sharded``. With ``--check`` rank 0 also gathers one weight and compares it
with the same call on an unsharded copy of that one layer's shape (a cheap bit-identity spot check).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

import torch
import torch.multiprocessing as mp
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class GPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, positions: int = 1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(positions, d)
        self.h = nn.ModuleList([Block(d) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(rank: int, world: int, args, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from initlab import initialize_sharded

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        net = GPT(args.vocab, args.width, args.layers)
    full_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    for block in net.h:
        fully_shard(block, mesh=mesh)
    fully_shard(net, mesh=mesh)
    before = rss_bytes()
    t0 = time.perf_counter()
    net.to_empty(device="cpu")
    initialize_sharded(net, {"Linear": "normal(std=0.02)", "Embedding": "normal(std=0.02)"}, seed=0)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    local = sum(p.to_local().numel() * p.element_size() for p in net.parameters())
    check = ""
    if args.check:
        got = net.h[0].c_fc.weight.full_tensor()
        ref = nn.Linear(args.width, 4 * args.width)
        initialize_sharded(nn.ModuleDict({"h": nn.ModuleList([nn.ModuleDict({"c_fc": ref})])}),
                           {"Linear": "normal(std=0.02)"}, seed=0)
        check = "identical" if torch.equal(got, ref.weight.detach()) else "DIFFERENT"
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(f"{before} {peak} {local} {full_bytes} {seconds} {check}\n")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        mp.spawn(worker, args=(args.world, args, os.path.join(d, "init"), d), nprocs=args.world, join=True)
        wall = time.perf_counter() - t0
        rows = []
        for r in range(args.world):
            with open(os.path.join(d, f"rank{r}.txt")) as f:
                rows.append(f.read().split())
    gib = 1 << 30
    full = int(rows[0][3])
    print(f"GPT vocab={args.vocab} width={args.width} layers={args.layers}: {full / 4 / 1e6:.0f}M parameters, "
          f"{full / gib:.2f} GiB float32; world size {args.world}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; wall {wall:.0f} s (spawn and imports included)")
    print("rank  RSS before to_empty  peak RSS  growth  local shard  growth/full  target  to_empty+init  check")
    for r, (before, peak, local, _, seconds, *check) in enumerate(rows):
        before, peak, local = int(before), int(peak), int(local)
        growth = peak - before
        print(f"{r:>4}  {before / gib:>17.2f}G  {peak / gib:>7.2f}G  {growth / gib:>5.2f}G  {local / gib:>10.2f}G  "
              f"{growth / full:>11.1%}  {1 / args.world + 0.1:>6.0%}  {float(seconds):>12.1f}s  {' '.join(check)}")


if __name__ == "__main__":
    main()
