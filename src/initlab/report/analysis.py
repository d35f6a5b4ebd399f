"""The pages of ``probe`` (signal at init, measured against mean-field theory) and ``audit`` results."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from initlab.report.charts import Point, Series, fmt_value, line_chart
from initlab.report.common import (
    HEALTHY_FORWARD,
    HEALTHY_GRAD,
    Folder,
    as_bool,
    join_words,
    legend,
    num,
    page,
    plural,
    raw_config_rows,
    run_env,
    text,
)


def weight_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of parametrized layers (they have a weight gradient or a unit count)."""
    cols = [c for c in ("weight_grad_norm", "distinct_units", "units") if c in frame]
    return frame[frame[cols].notna().any(axis=1)] if cols else frame.iloc[:0]


def layer_chart(frame: pd.DataFrame, group: str, inits, column: str, label: str, title: str, *,
                predicted: str | None = None, caption: str = "", ylim=None, ylog="auto") -> dict | None:
    """One line per init along the layers of ``frame`` (one network), the prediction wide and pale."""
    names = list(dict.fromkeys(frame["name"]))
    if not names or column not in frame or pd.to_numeric(frame[column], errors="coerce").notna().sum() == 0:
        return None
    series = []
    for k, init in enumerate(inits):
        sub = frame[frame[group] == init]
        if sub.empty:
            continue
        v = pd.to_numeric(sub[column], errors="coerce").groupby(sub["name"]).mean()
        series.append(Series(k, init, [Point(i, v.get(n, math.nan), f"{init}, {n}: {label} {fmt_value(v.get(n))}"
                                             + (f" (predicted {fmt_value(p)})" if predicted and np.isfinite(
                                                 p := num(sub.loc[sub['name'] == n, predicted].mean())) else ""))
                                       for i, n in enumerate(names)]))
        if predicted and predicted in sub and pd.to_numeric(sub[predicted], errors="coerce").notna().any():
            p = pd.to_numeric(sub[predicted], errors="coerce").groupby(sub["name"]).mean()
            series.append(Series(k, init, [Point(i, p.get(n, math.nan), f"{init}, {n}: predicted {label} "
                                                 f"{fmt_value(p.get(n))}") for i, n in enumerate(names)],
                                 style="predicted", markers=False))
    if not series:
        return None
    return line_chart(series, xlabel="layer", ylabel=label, title=title, caption=caption, xcategories=names,
                      ylim=ylim, ylog=ylog)


# ---------------------------------------------------------------------------------------- probe


def probe_reading(summary: pd.DataFrame) -> list[str]:
    out = []
    for act, grp in summary.groupby("activation", sort=False):
        parts, factors = [], []
        for _, r in grp.iterrows():
            init = str(r["init"])
            fwd = num(r["std_last"]) / num(r["std_first"]) if num(r["std_first"]) > 0 else math.nan
            grad = num(r["grad_first_over_last"])
            where = f"{text(r.get('layer_first')) or 'first'} → {text(r.get('layer_last')) or 'last'}"
            if text(r.get("nonfinite_from")):
                parts.append(f"{init} overflows to inf/NaN from {text(r['nonfinite_from'])}")
                continue
            if num(r["std_first"]) == 0 and num(r["std_last"]) == 0:
                parts.append(f"{init} outputs exactly 0 at every layer"
                             + (" with 1 distinct unit per layer" if num(r.get("distinct_min")) == 1 else ""))
                continue
            bad = []
            if np.isfinite(fwd) and not HEALTHY_FORWARD[0] <= fwd <= HEALTHY_FORWARD[1]:
                bad.append(f"the forward std {'shrinks' if fwd < 1 else 'grows'} ×{fwd:.2g} ({where})")
            if np.isfinite(grad) and not HEALTHY_GRAD[0] <= grad <= HEALTHY_GRAD[1]:
                bad.append(f"the gradient first/last is {grad:.2g} ({'vanishing' if grad < 1 else 'exploding'})")
            if num(r.get("distinct_min")) == 1:
                bad.append("a layer has only 1 distinct unit")
            if num(r.get("dead_frac")) >= 0.5:
                bad.append(f"{num(r['dead_frac']):.0%} of units are dead")
            if num(r.get("sat_frac")) >= 0.5:
                bad.append(f"{num(r['sat_frac']):.0%} of units are saturated")
            if bad:
                parts.append(f"{init}: {join_words(bad)}")
            else:
                parts.append(f"{init} keeps both signals (forward ×{fwd:.2g}, gradient first/last {grad:.2g})")
            for m, p in ((r.get("std_last"), r.get("pred_std_last")),):
                if num(m) > 0 and num(p) > 0:
                    factors.append((max(num(m) / num(p), num(p) / num(m)), init))
        items = [p + "." for p in parts]
        if factors:
            worst, who = max(factors)
            items.append(f"Mean-field theory predicts the last layer's std within ×{worst:.2g} for every init that "
                         f"carries a signal (worst: {who}).")
        out.append({"text": f"{act} network:", "items": items})
    if out:
        out.append(f"Healthy here means the last layer's std within ×{HEALTHY_FORWARD[0]:g}–{HEALTHY_FORWARD[1]:g} "
                   f"of the first's and the gradient ratio within {HEALTHY_GRAD[0]:g}–{HEALTHY_GRAD[1]:g}, "
                   "the bands initlab audit uses.")
    return out


def build_probe(folder: Folder, report) -> dict:
    frame = folder.csv("probe.csv")
    summary = folder.csv("summary.csv")
    config = folder.json("config.json") if (folder.path / "config.json").exists() else None
    source = frame if frame is not None else summary
    inits = [str(i) for i in dict.fromkeys(source["init"])] if source is not None else []
    acts = [str(a) for a in dict.fromkeys(source["activation"])] if source is not None else []
    charts, rows = [], []
    layers, width = 0, "?"
    if frame is not None and len(frame):
        for act in acts:
            f = frame[frame["activation"] == act]
            w = weight_rows(f)
            layers = max(layers, w["name"].nunique())
            hidden = pd.to_numeric(w["out_features"], errors="coerce").dropna() if "out_features" in w else []
            if len(hidden) > 1:
                width = int(hidden.iloc[:-1].median())
            for c in (layer_chart(w, "init", inits, "out_std", "output std", f"{act}: signal by layer",
                                  predicted="pred_std", caption="dots: measured; wide pale line: mean-field prediction"),
                      layer_chart(w, "init", inits, "grad_out_norm", "gradient norm", f"{act}: gradient by layer",
                                  predicted="pred_grad_norm", caption="norm of the loss gradient w.r.t. each layer's "
                                                                      "output; wide pale line: predicted"),
                      layer_chart(f[f["dead_frac"].notna()], "init", inits, "dead_frac", "dead fraction",
                                  f"{act}: dead units by layer", ylim=(0, 1), ylog=False,
                                  caption="units that output 0 for every example"),
                      layer_chart(f[f["sat_frac"].notna()] if "sat_frac" in f else f.iloc[:0], "init", inits,
                                  "sat_frac", "saturated fraction", f"{act}: saturated units by layer", ylim=(0, 1),
                                  ylog=False, caption="units in the flat tails of the activation"),
                      layer_chart(w, "init", inits, "eff_rank", "effective rank", f"{act}: effective rank by layer",
                                  ylog=False, caption="exp(entropy of the singular values); low = collapsed")):
                if c is not None:
                    charts.append(c)
    keys = {init: k for k, init in enumerate(inits)}
    if summary is not None:
        def pair(m, p):
            return fmt_value(num(m), 2) + (f" ({fmt_value(num(p), 2)})" if np.isfinite(num(p)) else "")

        for _, r in summary.iterrows():
            rows.append({"key": keys.get(str(r["init"]), 0), "activation": str(r["activation"]), "init": str(r["init"]),
                         "first": pair(r["std_first"], r.get("pred_std_first")),
                         "mid": pair(r["std_mid"], r.get("pred_std_mid")),
                         "last": pair(r["std_last"], r.get("pred_std_last")),
                         "grad": pair(r["grad_first_over_last"], r.get("pred_grad_first_over_last")),
                         "dead": fmt_value(num(r.get("dead_frac")), 2) if np.isfinite(num(r.get("dead_frac"))) else "—",
                         "sat": fmt_value(num(r.get("sat_frac")), 2) if np.isfinite(num(r.get("sat_frac"))) else "—",
                         "distinct": text(int(num(r["distinct_min"])) if np.isfinite(num(r.get("distinct_min"))) else ""),
                         "nonfinite": text(r.get("nonfinite_from"))})
    images = []
    for name in folder.marker.get("files", []):
        if isinstance(name, str) and name.startswith("hist_") and name.endswith(".png"):
            src = folder.image(name)
            if src:
                images.append({"src": src, "alt": f"histograms {name}",
                               "caption": f"Activation histograms per layer ({name[5:-4]}), Glorot & Bengio-style"})
    words = [("networks", f"{join_words(acts)} MLPs" + (f", {layers} weight layers of width {width}" if layers else "")),
             ("inits", ", ".join(inits)),
             ("measured", "at init, on one batch of training examples: each layer's output std, the loss gradient "
                          "w.r.t. it, dead and saturated units, distinct units, effective rank"),
             ("predicted", "mean-field theory's std and gradient for the same network (initlab.core.theory)")]
    return page(folder, report, template="probe.html.j2",
                title=f"probe: {', '.join(inits)} on {', '.join(acts)} networks",
                question=f"How does the signal travel forward and the gradient backward through these networks at "
                         f"init under {join_words(inits)}, and does mean-field theory predict it?",
                reading=probe_reading(summary) if summary is not None else [], inits=legend(inits), rows=rows,
                charts=charts, images=images, config_words=words, config_raw=raw_config_rows(config),
                environment=run_env(folder, config, None))


# ---------------------------------------------------------------------------------------- audit


def audit_reading(summary: pd.DataFrame) -> list[str]:
    out = []
    rec = summary[summary["recommended"].map(as_bool)]
    healthy = summary[summary["flags"].map(text) == ""]
    if len(rec):
        r = rec.iloc[0]
        ok = text(r["flags"]) == ""
        out.append(f"Recommended: {r['scheme']}, forward ratio {fmt_value(num(r['forward_ratio']), 3)} and gradient "
                   f"ratio {fmt_value(num(r['grad_ratio']), 3)}"
                   + (f", both inside the healthy bands ({HEALTHY_FORWARD[0]:g}–{HEALTHY_FORWARD[1]:g} and "
                      f"{HEALTHY_GRAD[0]:g}–{HEALTHY_GRAD[1]:g})." if ok else
                      f"; it is the least bad candidate: {text(r['flags'])}."))
    others = healthy[~healthy["recommended"].map(as_bool)]
    if len(others):
        out.append("Also healthy: " + "; ".join(
            f"{r['scheme']} (forward {fmt_value(num(r['forward_ratio']), 2)}, gradient {fmt_value(num(r['grad_ratio']), 2)})"
            for _, r in others.iterrows()) + ".")
    for _, r in summary[summary["flags"].map(text) != ""].iterrows():
        if not as_bool(r["recommended"]):
            out.append(f"{r['scheme']}: {text(r['flags'])}.")
    if len(healthy) == 0 and len(summary):
        out.append("No candidate keeps both signals in the healthy bands on this model.")
    return out


def build_audit(folder: Folder, report) -> dict:
    summary = folder.csv("summary.csv")
    profile = folder.csv("audit.csv")
    config = folder.json("config.json") if (folder.path / "config.json").exists() else None
    schemes = [str(s) for s in dict.fromkeys(summary["scheme"])] if summary is not None else \
        ([str(s) for s in dict.fromkeys(profile["scheme"])] if profile is not None else [])
    keys = {s: k for k, s in enumerate(schemes)}
    charts = []
    if profile is not None and len(profile):
        w = weight_rows(profile)
        acts = profile[~profile.index.isin(w.index)]
        for c in (layer_chart(w, "scheme", schemes, "out_std", "output std", "Forward: output std by layer",
                              caption=f"healthy: last/first within {HEALTHY_FORWARD[0]:g}–{HEALTHY_FORWARD[1]:g}"),
                  layer_chart(w, "scheme", schemes, "weight_grad_norm", "weight-gradient norm",
                              "Backward: weight-gradient norm by layer",
                              caption=f"healthy: first/last within {HEALTHY_GRAD[0]:g}–{HEALTHY_GRAD[1]:g}"),
                  layer_chart(acts[acts["dead_frac"].notna()], "scheme", schemes, "dead_frac", "dead fraction",
                              "Dead units by layer", ylim=(0, 1), ylog=False),
                  layer_chart(acts[acts["sat_frac"].notna()], "scheme", schemes, "sat_frac", "saturated fraction",
                              "Saturated units by layer", ylim=(0, 1), ylog=False)):
            if c is not None:
                charts.append(c)
    rows = []
    if summary is not None:
        for _, r in summary.iterrows():
            rows.append({"key": keys[str(r["scheme"])], "scheme": str(r["scheme"]), "rec": as_bool(r["recommended"]),
                         "forward": fmt_value(num(r["forward_ratio"]), 3), "grad": fmt_value(num(r["grad_ratio"]), 3),
                         "flags": text(r["flags"])})
    images = [{"src": src, "alt": name, "caption": cap} for name, cap in
              (("audit_forward.png", "Forward signal per layer with the mean-field prediction (dotted), as drawn by "
                                     "initlab audit"),
               ("audit_backward.png", "Backward signal per layer, as drawn by initlab audit"))
              if name in folder.marker.get("files", []) and (src := folder.image(name))]
    model = (config or {}).get("model")
    layers = weight_rows(profile)["name"].nunique() if profile is not None else 0
    words = [("model", str(model) if model else f"not recorded in this folder; {plural(layers, 'weight layer')} "
                                                "(from audit.csv)"),
             ("candidates", ", ".join(schemes)),
             ("measured", "each candidate initializes a copy of the model from the same seed; per layer the output "
                          "std and the weight-gradient norm on one example batch"),
             ("forward ratio", "RMS of the last hidden representation over the first's "
                               f"(healthy {HEALTHY_FORWARD[0]:g}–{HEALTHY_FORWARD[1]:g})"),
             ("gradient ratio", "first over last hidden weight-gradient norm "
                                f"(healthy {HEALTHY_GRAD[0]:g}–{HEALTHY_GRAD[1]:g})")]
    return page(folder, report, template="audit.html.j2",
                title="audit: " + (f"{model}, " if model else "") + f"{len(schemes)} candidate inits",
                question=f"How would each of {join_words(schemes)} treat this model at init: does the signal survive "
                         "forward and the gradient backward, and which one should you use?",
                reading=audit_reading(summary) if summary is not None else [], inits=legend(schemes), rows=rows,
                charts=charts, images=images, config_words=words, config_raw=raw_config_rows(config),
                environment=run_env(folder, config, None))
