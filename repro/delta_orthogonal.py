"""Jacobian spectrum of a deep tanh CNN: delta-orthogonal vs Gaussian kernels of the same variance.

Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory of CNNs": with delta-orthogonal
kernels (Algorithm 2) a deep vanilla tanh CNN at σ_w² = 1, σ_b = 0 keeps the singular values of
its input-output Jacobian concentrated, while Gaussian kernels of the same variance
(std² = σ_w² / fan_in, fan_in = c·3·3) spread them over many decades.

Run: ``.venv/bin/python repro/delta_orthogonal.py [--depth 32] [--channels 16] [--size 8]``
(about 1–2 min on 2 CPU cores). Network: ``depth`` × (Conv2d(c, c, 3, circular padding,
zero bias) → tanh); inputs N(0, q0) of shape (c, size, size), for q0 = 1 (unit-variance inputs)
and q0 = 0.01 (near the q* = 0 fixed point of σ_b = 0). Float64 throughout, so singular values
down to ~1e-13·σ_max are resolved (float32 stops near 1e-4·σ_max at this size). Spectra are
exact (``initlab.jacobian_spectrum``, min(in, out) = c·size² products per example), pooled over
``--examples`` inputs and ``--seeds`` weight draws. Prints a table and writes
``docs/img/delta_orthogonal_spectrum.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from initlab import initialize, jacobian_spectrum  # noqa: E402

SCHEMES = {  # label -> scheme; both have weight variance σ_w² / fan_in with σ_w² = 1
    "delta-orthogonal": "delta_orthogonal(gain=1)",
    "Gaussian": "variance_scaling(scale=1,mode=fan_in,distribution=normal)",
}


def tanh_cnn(depth: int, channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular"), nn.Tanh()]
    return nn.Sequential(*layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--examples", type=int, default=2, help="inputs per weight draw")
    ap.add_argument("--seeds", type=int, default=1, help="weight draws")
    ap.add_argument("--q0", default="1,0.01", help="input variances, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/img/delta_orthogonal_spectrum.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    q0s = [float(q) for q in args.q0.split(",")]
    t0 = time.time()

    results: dict[tuple[float, str], list] = {}
    for q0 in q0s:
        for label, scheme in SCHEMES.items():
            spectra = []
            for seed in range(args.seeds):
                gen = torch.Generator().manual_seed(seed)
                model = initialize(tanh_cnn(args.depth, args.channels), scheme, generator=gen).double().eval()
                x = math.sqrt(q0) * torch.randn(args.examples, args.channels, args.size, args.size,
                                                generator=gen, dtype=torch.float64)
                spectra.append(jacobian_spectrum(model, x, max_examples=args.examples))
            results[(q0, label)] = spectra

    print(f"deep tanh CNN: depth {args.depth}, {args.channels} channels, 3x3 circular, "
          f"{args.size}x{args.size} inputs, σ_w²=1, σ_b=0, float64, exact spectra; "
          f"{args.seeds} weight draw(s) x {args.examples} inputs")
    print(f"{'q0':>5} {'init':<17} {'χ=mean σ²':>10} {'σ_max':>8} {'p5':>9} {'p95':>8} "
          f"{'decades p5-p95':>15} {'σ_max/σ_min':>12} {'negligible':>10}")
    for (q0, label), spectra in results.items():
        s = torch.cat([sp.singular_values for sp in spectra])
        w = torch.cat([sp.weights for sp in spectra]) / len(spectra)
        chi = float((w * s**2).sum())
        p5 = sum(sp.p5 for sp in spectra) / len(spectra)
        p95 = sum(sp.p95 for sp in spectra) / len(spectra)
        dec = sum(sp.decades for sp in spectra) / len(spectra)
        cond = max(sp.condition for sp in spectra)
        neg = sum(sp.negligible for sp in spectra) / len(spectra)
        print(f"{q0:>5g} {label:<17} {chi:>10.4f} {float(s.max()):>8.3f} {p5:>9.2e} {p95:>8.3f} "
              f"{dec:>15.2f} {cond:>12.3g} {neg:>10.3f}")

    fig, axes = plt.subplots(1, len(q0s), figsize=(5.2 * len(q0s), 3.6), squeeze=False)
    for ax, q0 in zip(axes[0], q0s):
        for (label, color) in zip(SCHEMES, ("tab:blue", "tab:red")):
            s = torch.cat([sp.singular_values for sp in results[(q0, label)]])
            w = torch.cat([sp.weights for sp in results[(q0, label)]])
            keep = s > 0
            logs = torch.log10(s[keep]).numpy()
            dec = sum(sp.decades for sp in results[(q0, label)]) / len(results[(q0, label)])
            ax.hist(logs, bins=60, weights=(w[keep] / w[keep].sum()).numpy(), alpha=0.6, color=color,
                    label=f"{label} ({dec:.1f} decades p5–p95)")
        floor = max(sp.threshold for label in SCHEMES for sp in results[(q0, label)])
        ax.axvline(math.log10(floor), color="k", linestyle=":", linewidth=1,
                   label="round-off floor (negligible below)")
        ax.set_xlabel("log10 singular value of ∂y/∂x")
        ax.set_ylabel("fraction")
        ax.set_title(f"depth {args.depth}, tanh, σ_w²=1, σ_b=0, input var {q0:g}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    wall = time.time() - t0
    print(f"wrote {args.out}; wall {wall:.0f} s; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads")


if __name__ == "__main__":
    main()
