"""Real networks at init: auto vs he vs each model's own init vs anyinit, and audit's time per model.

For every model of ``initlab.models.external.REAL_SUITE`` (timm, torchvision and Hugging Face models from
small configs, batch 4, 64×64 images or 16 tokens), measured by ``initlab.audit`` (one forward and one
backward pass, cross-entropy on random labels, per token for language models):

* forward ratio: RMS into the last weight layer / RMS into the second (weight layers with floating inputs);
* gradient ratio: first / last hidden weight-gradient norm;
* logit std at init.

Healthy: forward ratio in [0.5, 2], gradient ratio in [0.1, 10], logit std ≤ 3 (issue 16's criteria).
"own" is the model as its library built it (scheme ``none``); anyinit (if importable, e.g. with
``PYTHONPATH`` pointing at a ``pip install --target`` copy) runs ``anyinit.initialize(model)`` data-free.
The audit time is ``initlab.audit(model, example)`` with the default candidates (auto, he, xavier,
pytorch_default), after one warm-up call.

Usage: python benchmarks/bench_real_models.py [--threads 2] [--models hf:gpt2,timm:resnet50] [--csv out.csv]
"""
from __future__ import annotations

import argparse
import copy
import math
import platform
import time
import warnings

import pandas as pd
import torch

import initlab
from initlab.models.external import REAL_SUITE, suite_example

HEALTHY = dict(forward=(0.5, 2.0), grad=(0.1, 10.0), logit_std=3.0)


def healthy(f: float, g: float, s: float) -> bool:
    return (HEALTHY["forward"][0] <= f <= HEALTHY["forward"][1] and HEALTHY["grad"][0] <= g <= HEALTHY["grad"][1]
            and s <= HEALTHY["logit_std"])


def measure(model, example, scheme: str) -> dict:
    a = initlab.audit(model, example, [scheme]).candidates[scheme]
    if a.error:
        return dict(forward=math.nan, grad=math.nan, logit_std=math.nan, healthy=False, error=a.error[:80])
    return dict(forward=a.forward_ratio, grad=a.grad_ratio, logit_std=a.logit_std,
                healthy=healthy(a.forward_ratio, a.grad_ratio, a.logit_std), error="")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(REAL_SUITE))
    ap.add_argument("--csv", default=None)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--timing-only", action="store_true", help="only the audit time per model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    try:
        import anyinit  # noqa: F401
    except ImportError:
        anyinit = None
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"anyinit {'yes' if anyinit else 'not installed'}")
    rows = []
    for name in args.models.split(","):
        maker, kind = REAL_SUITE[name]
        torch.manual_seed(0)
        model = maker(64).eval()
        example = suite_example(kind, batch=4, generator=torch.Generator().manual_seed(1), size=64)
        row = {"model": name}
        for label, scheme in () if args.timing_only else (("own", "none"), ("he", "he"), ("auto", "auto")):
            for k, v in measure(model, example, scheme).items():
                row[f"{label}_{k}"] = v
        if anyinit is not None and not args.timing_only:
            net = copy.deepcopy(model)
            try:
                anyinit.initialize(net)
                res = measure(net, example, "none")
            except Exception as e:  # noqa: BLE001 - the peer's failure is a result
                res = dict(forward=math.nan, grad=math.nan, logit_std=math.nan, healthy=False,
                           error=f"{type(e).__name__}: {str(e)[:60]}")
            for k, v in res.items():
                row[f"anyinit_{k}"] = v
        if not args.no_timing:
            initlab.audit(model, example)  # warm-up
            start = time.perf_counter()
            report = initlab.audit(model, example)
            row["audit_s"] = time.perf_counter() - start
            row["auto_s"] = report.candidates["auto"].seconds
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False, float_format=lambda v: f"{v:.3g}"), flush=True)
    frame = pd.DataFrame(rows)
    for label in ("own", "he", "auto", "anyinit"):
        if f"{label}_healthy" in frame:
            print(f"{label}: healthy on {int(frame[f'{label}_healthy'].sum())}/{len(frame)}")
    if "audit_s" in frame:
        print(f"audit: median {frame.audit_s.median():.1f} s, max {frame.audit_s.max():.1f} s ({frame.model[frame.audit_s.idxmax()]})")
    if args.csv:
        frame.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
