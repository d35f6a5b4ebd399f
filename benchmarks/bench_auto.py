"""Depth stability of the "auto" init (initlab.core.criticality) against anyinit, He and Xavier.

Run: ``.venv/bin/python benchmarks/bench_auto.py [--seeds 5] [--depth 50] [--width 256]``.

For every activation: an MLP ``width -> width × depth -> 10`` (φ after every hidden layer), inputs
N(0, 1) of shape (batch = width, width), random labels; one forward/backward per seed. Columns:

* fwd = RMS of the last hidden pre-activation / RMS of the first (target [0.5, 2]);
* grad = ‖∂L/∂W‖ first Linear / last hidden Linear, L = mean cross-entropy (target [0.1, 10]);

each the median over seeds (ours also with min–max). Inits: ours (``initialize(model, "auto",
example=x)``: the graph read by torch.fx, each layer's σ_w²/σ_b² from ``initlab.schemes.auto.layer_params``,
input layer landing on q*, classifier LeCun), anyinit 0.4.0
``initialize(model, "analytic", (batch, width), seed=s)`` as its README says (skipped with a note
if it is not importable; it is never a dependency of initlab), He (``kaiming_normal_``, relu gain)
and Xavier (``xavier_normal_``) on every Linear with zero biases. Times: ``layer_params``
uncached (median of 3 calls), one whole ``initialize(model, "auto", example=x)`` call (graph
reading included), and one ``anyinit.initialize`` call.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import time

import torch
from torch import nn

from initlab.core import criticality as C
from initlab.schemes.auto import layer_params
from initlab.models import mlp
from initlab.schemes import initialize
from machine import machine_info  # benchmarks/machine.py: the machine line, the GPU clock barrier

try:
    import anyinit
except ImportError:  # optional: only this benchmark uses it
    anyinit = None


def x_tanh_x(x):
    return x * torch.tanh(x)


def softplus_shifted(x):
    return nn.functional.softplus(x) - math.log(2)


def relu_squared(x):
    return torch.relu(x) ** 2


# name -> what initlab is given (a name, a torch function, a module, a user function)
ACTIVATIONS = {
    "relu": "relu", "tanh": "tanh", "gelu": "gelu", "silu": "silu", "selu": "selu", "elu": "elu",
    "sigmoid": "sigmoid", "sin": torch.sin, "x·tanh x": x_tanh_x, "mish": nn.Mish(),
    "softplus − ln 2": softplus_shifted, "relu²": relu_squared,
}


def module_class(name, fn):
    """One nn.Module subclass per custom activation, so anyinit can register it by class."""
    ident = "bench_" + "".join(c if c.isalnum() else "_" for c in name.encode("ascii", "replace").decode())
    cls = type(ident, (nn.Module,), {"forward": lambda self, x: fn(x)})
    if anyinit is not None:
        anyinit.register_activation(cls, name=ident, overwrite=True)
    return cls


def factory(name, act, depth, width):
    if isinstance(act, str):
        return lambda: mlp(width, [width] * depth, 10, act)
    cls = module_class(name, act)

    def build():
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), cls()]
        return nn.Sequential(*layers, nn.Linear(width, 10))
    return build


def reference_init(model, scheme, generator):
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            else:
                nn.init.xavier_normal_(m.weight, generator=generator)
            nn.init.zeros_(m.bias)
    return model




def fmt(x):
    if not math.isfinite(x):
        return "nan/inf"
    return f"{x:.2f}" if 0.01 <= abs(x) < 100 else f"{x:.1e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {datetime.date.today()} — {machine_info()}; {platform.platform()}; anyinit {getattr(anyinit, '__version__', 'not installed')}")
    print(f"# MLP {args.width}-{args.width}×{args.depth}-10, batch {args.width}, inputs N(0,1), random labels, "
          f"mean cross-entropy; medians over {args.seeds} seeds")
    if anyinit is None:
        print("# anyinit is not importable: its columns are skipped (pip install anyinit==0.4.0 to fill them)")
    inits = ["ours"] + (["anyinit"] if anyinit is not None else []) + ["he", "xavier"]
    head = ["activation", "mode", "σ_w²", "σ_b²", "q*", "stable", "ours fwd [min–max]", "ours grad [min–max]"]
    head += [f"{i} fwd / grad" for i in inits[1:]] + ["params ms / whole auto init",
                                                    *(["anyinit s"] if anyinit is not None else [])]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    t_start = time.perf_counter()
    for name, act in ACTIVATIONS.items():
        times = []
        for _ in range(3):
            C._auto_named.cache_clear()
            t0 = time.perf_counter()
            params = layer_params(act, 0.5, 1.0, depth=args.depth)
            times.append(time.perf_counter() - t0)
        build = factory(name, act, args.depth, args.width)
        res = {i: [] for i in inits}
        any_time, our_time = [], []
        for seed in range(args.seeds):
            g = torch.Generator().manual_seed(1000 + seed)
            x = torch.randn(args.width, args.width, generator=g)
            y = torch.randint(0, 10, (args.width,), generator=g)
            for init in inits:
                model = build()
                gen = torch.Generator().manual_seed(seed)
                if init == "ours":
                    t0 = time.perf_counter()
                    initialize(model, "auto", example=x, generator=gen)
                    our_time.append(time.perf_counter() - t0)
                elif init == "anyinit":
                    t0 = time.perf_counter()
                    anyinit.initialize(model, "analytic", (args.width, args.width), seed=seed)
                    any_time.append(time.perf_counter() - t0)
                else:
                    reference_init(model, init, gen)
                res[init].append(C.measure_ratios(model, x, y))

        def med(init, k):
            vals = [r[k] if math.isfinite(r[k]) else math.inf for r in res[init]]
            return statistics.median(vals), min(vals), max(vals)
        row = [name, params.mode, f"{params.sigma_w2:.3g}", f"{params.sigma_b2:.3g}", f"{params.q_star:.3g}",
               "yes" if params.stable else "**no**"]
        for k in (0, 1):
            m, lo, hi = med("ours", k)
            row.append(f"{fmt(m)} [{fmt(lo)}–{fmt(hi)}]")
        for init in inits[1:]:
            row.append(f"{fmt(med(init, 0)[0])} / {fmt(med(init, 1)[0])}")
        row.append(f"{1000 * statistics.median(times):.0f} / {statistics.median(our_time):.2f} s")
        if anyinit is not None:
            row.append(f"{statistics.median(any_time):.2f}")
        print("| " + " | ".join(row) + " |", flush=True)
    print(f"# total {time.perf_counter() - t_start:.0f} s")
    print("# verdicts:")
    for name, act in ACTIVATIONS.items():
        print(f"#   {name}: {layer_params(act, 0.5, 1.0, depth=args.depth).verdict}")


if __name__ == "__main__":
    main()
