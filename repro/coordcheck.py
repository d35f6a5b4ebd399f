"""μP's learning-rate transfer (Tensor Programs V, Fig. 1) on the zoo MLP, SP vs μP, Adam.

    .venv/bin/python repro/coordcheck.py [--out runs/mup_lr] [--steps 150] [--seeds 2]

Trains mlp(depth=2) at widths 64, 256, 1024 on digits for every lr in 2^-12 … 2^-4 (μP: base
width 64, per-layer lrs from its plan), prints the best lr per width and writes lr_transfer.csv
and coordcheck_lr_transfer.png into --out. The coordinate check itself is ``initlab coordcheck``.
"""
import argparse
import platform
import time
from pathlib import Path

import torch

from initlab.analysis.coordcheck import best_lrs, lr_transfer


def plot(sweep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, par in zip(axes, ("sp", "mup")):
        d = sweep[sweep.parametrization == par].groupby(["width", "lr"])["loss"].mean()
        for w in sorted(sweep.width.unique()):
            s = d.loc[w]
            ax.plot(s.index, s.values, marker=".", label=f"width {w}")
            ax.plot(s.idxmin(), s.min(), "k*", ms=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("Adam lr (μP: at base width 64)" if par == "mup" else "Adam lr")
        ax.set_title({"sp": "SP (He init, one lr)", "mup": "μP"}[par])
    axes[0].set_ylabel("train loss, last 10% of steps")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/mup_lr")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sweep = lr_transfer("mlp(depth=2)", (64, 256, 1024), tuple(2.0 ** k for k in range(-12, -3)),
                        steps=args.steps, seeds=args.seeds)
    seconds = time.perf_counter() - t0
    sweep.to_csv(out / "lr_transfer.csv", index=False)
    plot(sweep, out / "coordcheck_lr_transfer.png")
    best = best_lrs(sweep)
    best["log2_lr"] = best["lr"].map(lambda v: round(__import__("math").log2(v)))
    print(best.to_string(index=False))
    print(f"{len(sweep)} runs in {seconds:.0f} s on {platform.machine()}, torch {torch.__version__}; wrote {out}/")


if __name__ == "__main__":
    main()
