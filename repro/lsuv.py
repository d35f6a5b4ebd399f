"""LSUV (Mishkin & Matas 2016) on deep plain networks: every layer's output std, against PyTorch's default.

Run: ``.venv/bin/python repro/lsuv.py [--dataset fashion-mnist|digits] [--threads N]``
(about a minute on a 2-vCPU VM; prints Markdown, pasted into docs/lsuv.md).

Models (plain stacks, no normalization, no residuals):

* MLP: ``D -> 256 × 29 -> 10``, 30 Linear layers, tanh or ReLU after every hidden layer;
* CNN: 8 × (Conv2d 3×3, padding 1, 32 channels, ReLU), global average pool, Linear(32, 10), on
  the images reshaped to (N, 1, H, W) with ``data.image_shape``.

Inputs: the dataset's training images standardized by the scalar pixel mean and std; the LSUV
example is the fixed 256-image probe batch every initlab run uses (``experiment.example_batch``),
and a second, disjoint 256-image batch checks that the stds carry over to data LSUV never saw.

Columns, per weight layer, std of its output (pre-activation, all elements):

* default: PyTorch's construction-time init, U(±1/sqrt(fan_in)) for weights and biases
  (``initialize(model, "pytorch_default", generator=g)``, the same distribution as a fresh module);
* orthogonal: LSUV's pre-init alone (what LSUV measures before rescaling the layer);
* LSUV: after ``initialize(model, "lsuv", example=probe, generator=g)`` (target 1, tol 0.1), measured
  afresh on the probe batch and on the held-out batch; iterations = rescalings LSUV made.

Below each table: the largest |mean| of a layer's output on the probe batch, without and with
``lsuv(mean_correction=true)``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import torch
from torch import nn

from initlab.data import load_dataset
from initlab.experiments.compare import example_batch
from initlab.schemes import initialize, initialize_with_report

LAYERS = (nn.Linear, nn.Conv2d)
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def mlp(d_in: int, act: type[nn.Module], depth: int = 30, width: int = 256) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn(convs: int = 8, channels: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def output_stats(model: nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """(std, mean) of every weight layer's output on x, in forward order (eval mode, float64)."""
    stats: list[tuple[float, float]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: stats.append((float(o.detach().double().std()),
                                                                  float(o.detach().double().mean()))))
             for m in model.modules() if isinstance(m, LAYERS)]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return stats


def output_stds(model: nn.Module, x: torch.Tensor) -> list[float]:
    return [s for s, _ in output_stats(model, x)]


def run(name: str, make, probe: torch.Tensor, held: torch.Tensor, seed: int = 0) -> tuple[str, dict]:
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731 - the same seed for every init
    default = output_stds(initialize(make(), "pytorch_default", generator=g()), probe)
    ortho = output_stds(initialize(make(), "orthogonal", generator=g()), probe)
    model = make()
    t0 = time.perf_counter()
    _, rep = initialize_with_report(model, "lsuv", example=probe, generator=g())
    seconds = time.perf_counter() - t0
    table = rep.attrs["lsuv"]
    after, after_held = output_stds(model, probe), output_stds(model, held)
    mean_plain = max(abs(mu) for _, mu in output_stats(model, probe))
    centred = make()
    initialize(centred, "lsuv(mean_correction=true)", example=probe, generator=g())
    mean_centred = max(abs(mu) for _, mu in output_stats(centred, probe))
    worst_centred = max(abs(s - 1) for s in output_stds(centred, probe))
    lines = [f"### {name}", "",
             "| layer | type | default | orthogonal | LSUV (probe) | LSUV (held-out) | iterations | within tol |",
             "|---|---|---:|---:|---:|---:|---:|:-:|"]
    for i, row in enumerate(table.itertuples()):
        lines.append(f"| {row.layer} | {row.module_type} | {default[i]:.3g} | {ortho[i]:.3g} | {after[i]:.4f} | "
                     f"{after_held[i]:.4f} | {row.iterations} | {'yes' if row.within_tol else 'NO'} |")
    worst = max(abs(s - 1) for s in after)
    worst_held = max(abs(s - 1) for s in after_held)
    summary = dict(layers=len(table), within=int(table["within_tol"].sum()), iters=int(table["iterations"].sum()),
                   max_iters=int(table["iterations"].max()), worst=worst, worst_held=worst_held, seconds=seconds,
                   default_last=default[-1], default_min=min(default), default_max=max(default))
    lines += ["", f"{summary['within']}/{summary['layers']} layers within tol; rescalings: {summary['iters']} in all, "
                  f"at most {summary['max_iters']} per layer; max |std − 1|: {worst:.2g} on the probe batch, "
                  f"{worst_held:.2g} held out; default init: output std {min(default):.3g} to {max(default):.3g} "
                  f"(last layer {default[-1]:.3g}); LSUV took {seconds:.2f} s. Largest |mean| of a layer's "
                  f"output: {mean_plain:.2g}; with `lsuv(mean_correction=true)` {mean_centred:.1g} "
                  f"(max |std − 1| {worst_centred:.2g}).", ""]
    return "\n".join(lines), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    kw = {"data_dir": FASHION_DIR} if args.dataset == "fashion-mnist" else {}
    data = load_dataset(args.dataset, normalize="standardize", **kw)
    idx = example_batch(data, 512)
    probe, held = data.x_train[idx[:256]], data.x_train[idx[256:]]
    images = lambda x: x.reshape(len(x), 1, *data.image_shape)  # noqa: E731
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; dataset {args.dataset} "
          f"(standardized), probe batch 256, held-out batch 256, target std 1, tol 0.1, max_iters 10\n")
    summaries = {}
    for name, make, p, h in [
        ("MLP, 30 Linear layers, tanh", lambda: mlp(data.in_features, nn.Tanh), probe, held),
        ("MLP, 30 Linear layers, ReLU", lambda: mlp(data.in_features, nn.ReLU), probe, held),
        ("CNN, 8 Conv2d 3×3 + ReLU, global average pool, Linear", cnn, images(probe), images(held)),
    ]:
        text, summaries[name] = run(name, make, p, h)
        print(text)
    total = time.perf_counter() - start
    print(f"wall time: {total:.1f} s (data loading included)")
    if any(s["within"] < s["layers"] for s in summaries.values()):
        raise SystemExit("some layer is not within tol")


if __name__ == "__main__":
    main()
