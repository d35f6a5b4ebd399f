"""ZerO's Theorem 1 ("training degeneracy"): with partial-identity init, rank(W − I) of a hidden layer
stays <= the input dimension during training; ZerO's Hadamard init lifts the bound.

Zhao, Schäfer & Anandkumar 2022, "ZerO Initialization" (TMLR), §3 and Fig. 3, in the setting of the
authors' MNIST notebook: an MLP ``d → d → n_h → n_h → 10`` (ReLU, no biases) with a
dimension-increasing second layer (n_h > d). Partial identity I* leaves units d..n_h−1 of that
layer at exactly zero forever (their pre-activation is 0 and ReLU'(0) = 0), so every update of the
next, square layer has rank <= d. ZerO initializes the dimension-increasing layer with
c·H_m[:n_h, :d] (Algorithm 1) and spreads the input over all n_h units.

Run: ``.venv/bin/python repro/zero_rank.py`` (Fashion-MNIST from ``--data-dir``, inputs projected
to d = 16 by a fixed Gaussian matrix: a bottleneck input; under a minute on 2 CPU cores), or
``--dataset digits --input-dim 0`` (the bundled 8×8 digits, d = 64, no projection).
Inits: partial identity, ZerO, ZerO with a He-normal output layer, He normal. Trains plain SGD
(lr 0.1, batch 64, cross-entropy) and records the rank of W_t − W_0 of the square
hidden layer (``n_h × n_h``; W_0 = I for ZerO and partial identity) every ``--every`` steps.
Rank = number of singular values above rtol·σ_max, at rtol = 1e-3 (robust to float32 round-off;
the table also shows rtol = n_h·eps_float32 ≈ 3e-5 for n_h = 256, numpy's ``matrix_rank`` rule).
Prints a table and writes ``docs/img/zero_rank.png``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from initlab import initialize, load_dataset  # noqa: E402

INITS = {
    "partial identity": "partial_identity",
    "ZerO (Hadamard)": "zero_hadamard",
    # ZerO's output layer I* (10 × n_h) confines the backward signal to 10 coordinates at first;
    # this row separates that from Theorem 1's forward-side bound
    "ZerO, He last layer": {"6.weight": "kaiming_normal", "*": "zero_hadamard"},
    "random (He normal)": "kaiming_normal",
}


def mlp(d: int, width: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d, d, bias=False), nn.ReLU(),
        nn.Linear(d, width, bias=False), nn.ReLU(),  # dimension-increasing layer
        nn.Linear(width, width, bias=False), nn.ReLU(),  # the square hidden layer whose rank is tracked
        nn.Linear(width, classes, bias=False),
    )


def rank(m: torch.Tensor, rtol: float) -> int:
    s = torch.linalg.svdvals(m.double())
    return int((s > rtol * s[0]).sum()) if float(s[0]) > 0 else 0


def train(x, y, x_test, y_test, scheme, width, steps, every, lr, batch, seed):
    model = initialize(mlp(x.shape[1], width, int(y.max()) + 1), scheme, generator=torch.Generator().manual_seed(seed))
    w0 = model[4].weight.detach().clone()
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    eps_tol = width * torch.finfo(torch.float32).eps
    log = []
    order, pos = torch.randperm(len(x), generator=gen), 0
    for step in range(steps + 1):
        if step % every == 0:
            delta = model[4].weight.detach() - w0
            log.append((step, rank(delta, 1e-3), rank(delta, eps_tol)))
        if step == steps:
            break
        if pos + batch > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
        # Theorem 1's mechanism, exactly: columns d.. of the update stay 0 under partial identity
        beyond = float((model[4].weight - w0)[:, x.shape[1]:].abs().max()) if width > x.shape[1] else 0.0
    return log, acc, beyond


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=["digits", "fashion-mnist"])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--input-dim", type=int, default=16, help="project inputs to d dims; 0: no projection")
    ap.add_argument("--width", type=int, default=256, help="n_h of the comparison of inits")
    ap.add_argument("--widths", default="128,256,512", help="n_h values for partial identity")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny MLPs: 1 is fastest)")
    ap.add_argument("--out", default="docs/img/zero_rank.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    if args.dataset == "digits":
        ds = load_dataset("digits", normalize="none")  # pixels in [0, 1], as the authors' notebook
    else:
        ds = load_dataset("fashion-mnist", data_dir=args.data_dir, normalize="none")
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if args.input_dim:  # fixed Gaussian projection: a bottleneck input of d dims
        proj = torch.randn(x.shape[1], args.input_dim, generator=torch.Generator().manual_seed(1234))
        proj /= x.shape[1] ** 0.5
        x, x_test = x @ proj, x_test @ proj
    d = x.shape[1]

    runs = {}
    for label, scheme in INITS.items():
        runs[(label, args.width)] = train(x, y, x_test, y_test, scheme, args.width, args.steps, args.every,
                                          args.lr, args.batch, args.seed)
    for width in (int(w) for w in args.widths.split(",")):
        if ("partial identity", width) not in runs:
            runs[("partial identity", width)] = train(x, y, x_test, y_test, "partial_identity", width, args.steps,
                                                      args.every, args.lr, args.batch, args.seed)

    shown = [s for s in (0, 100, 300, 1000, args.steps) if s <= args.steps and s % args.every == 0]
    print(f"{args.dataset}: input dim d = {d}, MLP d-d-n_h-n_h-10 ReLU no bias, SGD lr {args.lr} batch {args.batch}, "
          f"{args.steps} steps; rank of W_t − W_0 of the n_h×n_h layer")
    print("rank at rtol 1e-3 (at rtol n_h·eps32 in parentheses)")
    print(f"{'init':<20} {'n_h':>4} " + " ".join(f"{'step ' + str(s):>13}" for s in shown)
          + f" {'max':>5} {'max|ΔW[:, d:]|':>15} {'test acc':>8}")
    for (label, width), (log, acc, beyond) in runs.items():
        by_step = {s: (r, re) for s, r, re in log}
        cells = " ".join(f"{f'{by_step[s][0]} ({by_step[s][1]})':>13}" for s in shown)
        print(f"{label:<20} {width:>4} {cells} {max(r for _, r, _ in log):>5} {beyond:>15.3g} {acc:>8.3f}")
    print(f"bound of Theorem 1 for partial identity: d = {d}")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (label, width), (log, _, _) in runs.items():
        steps = [s for s, r, _ in log if s > 0]
        ranks = [r for s, r, _ in log if s > 0]
        if width == args.width:
            axes[1].plot(steps, ranks, label=label, linewidth=2)
        if label == "partial identity":
            axes[0].plot(steps, ranks, label=f"n_h = {width}", linewidth=2)
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("partial identity, several widths (curves coincide)", f"inits at n_h = {args.width}")):
        ax.axhline(d, color="red", linestyle="--", label=f"input dim d = {d}")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("rank(W_t − W_0), rtol 1e-3")
        ax.set_title(f"{args.dataset}: {title}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}; wall {time.time() - t0:.0f} s; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads")


if __name__ == "__main__":
    main()
