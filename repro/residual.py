"""Residual inits without normalization (Fixup) and GPT-2's residual scaling, measured.

Run: ``.venv/bin/python repro/residual.py [a|b|all] [--threads N]`` (prints Markdown, pasted into
docs/residual.md; plots to docs/img/residual_train.png and docs/img/residual_stream.png).

(a) ``resmlp(blocks=50,width=64,fixup=true)`` on the bundled 8×8 digits: 50 pre-activation
    blocks x + g·W₂ relu(W₁ relu(x)) (Fixup's scalar biases and multiplier g present; at g = 1,
    biases 0 the network is the plain one, so every init runs on the same model), no
    normalization, SGD batch 64, 3 epochs, 2 paired seeds, lr 0.1 and lr 0.01, through
    ``initlab.run_compare`` (divergence recorded, the comparison continues). Also the residual
    stream's std after the last block at init (256 training images) for each init.
(b) The zoo transformer (pre-LN, width 64, 4 heads, rows of 28×28 Fashion-MNIST images as 28
    tokens) at depth L = 1 … 64: std of the residual stream after the last block (a forward hook on
    ``blocks[-1]``, before ``ln_f``) on 64 test images, mean over 3 init seeds, under ``gpt2``
    (residual projections N(0, (0.02/√(2L))²)) and under ``normal(std=0.02)`` everywhere.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

import initlab
from initlab.data import load_dataset
from initlab.models import make_model
from initlab.schemes import initialize

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MODEL_A = "resmlp(blocks=50,width=64,fixup=true)"
INITS_A = ("pytorch_default", "he", "fixup")
LRS = (0.1, 0.01)
DEPTHS = (1, 2, 4, 8, 16, 32, 64)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} vCPU ({cpu}, shared: load average {load}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), Python {sys.version.split()[0]}")


def _fmt(x: float, spec: str = ".4f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


# --------------------------------------------------------------------------- (a)


def init_stream_std(data) -> dict[str, float]:
    """Residual-stream std after the last block at init, per init, on the probe images."""
    x = data.x_train[:256].reshape(256, -1)
    out = {}
    for init in INITS_A:
        model = make_model(MODEL_A, (x.shape[1],), data.num_classes)
        initialize(model, init, generator=torch.Generator().manual_seed(0))
        seen = {}
        model.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
        with torch.no_grad():
            model(x)
        out[init] = float(seen["h"].double().std())
    return out


def part_a() -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_dataset("digits")
    stds = init_stream_std(data)
    print(f"### (a) `{MODEL_A}`, digits, SGD batch 64, 3 epochs, seeds 0 and 1\n")
    print("Residual-stream std after block 50 at init (256 training images, seed 0): "
          + ", ".join(f"{k} {v:.3g}" for k, v in stds.items()) + "\n")
    print("| lr | init | seed | status | diverged at (epoch, step): reason | first-step loss | "
          "final train loss | final test acc |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for lr in LRS:
        spec = initlab.CompareSpec(inits=INITS_A, dataset="digits", model=MODEL_A, seeds=2, probe=False,
                                   train=initlab.TrainConfig(epochs=3, lr=lr))
        res = initlab.run_compare(spec, data=data)
        results[lr] = res
        for _, r in res.runs.iterrows():
            steps = res.steps[(res.steps["init"] == r["init"]) & (res.steps["seed"] == r["seed"])]
            met = res.metrics[(res.metrics["init"] == r["init"]) & (res.metrics["seed"] == r["seed"])]
            where = (f"({r['diverged_epoch']}, {r['diverged_step']}): {r['diverge_reason']}"
                     if r["status"] == "diverged" else "—")
            first = float(steps["train_loss"].iloc[0]) if len(steps) else math.nan
            train = float(met["train_loss"].iloc[-1]) if len(met) and r["status"] == "done" else math.nan
            acc = float(r["final_test_acc"]) if r["status"] == "done" else math.nan
            print(f"| {lr:g} | {r['init']} | {r['seed']} | {r['status']} | {where} | {_fmt(first, '.3g')} | "
                  f"{_fmt(train)} | {_fmt(acc)} |")
    print(f"\nchance: majority-class rate {results[LRS[0]].chance['rate']:.3f} "
          f"(ln 10 = {math.log(10):.4f} is the loss of the uniform guess)")
    plot_a(results)
    print(f"\n(a) wall time {time.perf_counter() - t0:.0f} s, CPU time {time.process_time() - c0:.0f} s; {machine()}\n")


def plot_a(results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.8), sharey=True)
    colors = {"pytorch_default": "tab:blue", "he": "tab:red", "fixup": "tab:green"}
    for ax, (lr, res) in zip(axes, results.items()):
        top = 20.0
        for (init, seed), g in res.steps.groupby(["init", "seed"], sort=False):
            x, y = g["step"].to_numpy(), g["train_loss"].to_numpy(dtype=float)
            finite = torch.isfinite(torch.tensor(y)).numpy()
            ax.plot(x[finite], y[finite].clip(max=top), color=colors[init], lw=1, marker=".", ms=3,
                    alpha=1 if seed == 0 else 0.5, label=init if seed == 0 else None)
            if not finite.all():  # where the run stopped: a non-finite loss
                ax.plot(x[~finite][0], top, "x", color=colors[init], ms=9, mew=2)
            if seed == 0 and finite.any() and y[finite].max() > top:
                ax.annotate(f"{init}: loss {y[finite].max():.2g} (clipped), then non-finite ×",
                            (x[finite][0], top), xytext=(8, -14), textcoords="offset points",
                            color=colors[init], fontsize=8)
        ax.axhline(math.log(10), color="gray", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(0.08, top * 1.6)
        ax.set_title(f"SGD lr {lr:g}: train loss per step")
        ax.set_xlabel("step (23 per epoch)")
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend()
    fig.suptitle(f"{MODEL_A}, no normalization, digits, seeds 0 (solid) and 1 (faint); dotted: ln 10")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "residual_train.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- (b)


def stream_std(depth: int, scheme: str, x: torch.Tensor, seed: int) -> float:
    model = make_model(f"transformer(depth={depth},width=64,heads=4)", tuple(x.shape[1:]), 10)
    initialize(model, scheme, generator=torch.Generator().manual_seed(seed))
    seen = {}
    model.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    with torch.no_grad():
        model(x)
    return float(seen["h"].double().std())


def part_b() -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_dataset("fashion-mnist", data_dir=FASHION_DIR)
    x = data.x_test[:64].reshape(64, 1, 28, 28)  # 64·28 tokens·64 = 115k stream values per measurement
    schemes = {"gpt2": "gpt2", "plain normal(0.02)": "normal(std=0.02)"}
    rows = {name: [sum(stream_std(d, s, x, seed) for seed in range(3)) / 3 for d in DEPTHS]
            for name, s in schemes.items()}
    print("### (b) zoo transformer, width 64, residual-stream std after the last block at init "
          "(64 Fashion-MNIST test images, mean of 3 seeds)\n")
    # plain: 2L independent branch outputs of variance c each on top of the embedding's v0, so
    # std² = v0 + 2L·c (a line in L; std ∝ √L once 2L·c ≫ v0). Least-squares line through std².
    plain, gpt2 = rows["plain normal(0.02)"], rows["gpt2"]
    var = [p * p for p in plain]
    mx, my = sum(DEPTHS) / len(DEPTHS), sum(var) / len(var)
    b = sum((d - mx) * (v - my) for d, v in zip(DEPTHS, var)) / sum((d - mx) ** 2 for d in DEPTHS)
    a = my - b * mx
    print("| L (blocks) | branches 2L | gpt2 | plain normal(0.02) | plain / gpt2 | local slope of plain "
          "(log₂ std(L)/std(L/2)) | plain, fit √(v0 + L·b) |")
    print("|---|---|---|---|---|---|---|")
    for i, d in enumerate(DEPTHS):
        g, p = gpt2[i], plain[i]
        slope = f"{math.log2(p / plain[i - 1]):.2f}" if i else "—"
        print(f"| {d} | {2 * d} | {g:.4f} | {p:.4f} | {p / g:.2f} | {slope} | {math.sqrt(a + b * d):.4f} |")
    print(f"\nfit of plain std² = v0 + L·b: v0 = {a:.5f} (std {math.sqrt(max(a, 0)):.4f}), b = {b:.6f} per block; "
          f"√L-regime from L ≈ v0/b = {a / b:.1f}")
    print(f"gpt2: std(64)/std(1) = {gpt2[-1] / gpt2[0]:.3f}, range {min(gpt2):.4f}…{max(gpt2):.4f}; "
          f"plain: std(64)/std(1) = {plain[-1] / plain[0]:.2f}")
    plot_b(rows, (a, b))
    print(f"\n(b) wall time {time.perf_counter() - t0:.0f} s, CPU time {time.process_time() - c0:.0f} s; {machine()}\n")


def plot_b(rows, fit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for (name, ys), c in zip(rows.items(), ("tab:green", "tab:red")):
        ax.plot(DEPTHS, ys, "o-", color=c, label=name)
    p = rows["plain normal(0.02)"]
    ax.plot(DEPTHS, [p[-1] * math.sqrt(d / DEPTHS[-1]) for d in DEPTHS], "k--", lw=1, label="∝ √L (through L = 64)")
    ax.plot(DEPTHS, [math.sqrt(fit[0] + fit[1] * d) for d in DEPTHS], ":", color="gray", lw=1.5,
            label=f"fit √(v0 + L·b), v0 = {fit[0]:.4f}, b = {fit[1]:.5f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L (transformer blocks; 2L residual branches)")
    ax.set_ylabel("std of residual stream after block L")
    ax.set_title("zoo transformer, width 64, at init")
    ax.legend()
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "residual_stream.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", default="all", choices=("a", "b", "all"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("a", "all"):
        part_a()
    if args.part in ("b", "all"):
        part_b()
