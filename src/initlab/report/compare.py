"""The page of a ``compare`` result: question, reading, tables, curves and what the probe saw."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from initlab.report.charts import Point, Series, fmt_value, line_chart
from initlab.report.common import (
    IN_FEATURES,
    Folder,
    as_bool,
    join_words,
    legend,
    num,
    page,
    plural,
    pm,
    raw_config_rows,
    run_env,
    text,
)

STEP_POINTS = 240  # per-step loss is binned to this many points per init (a page, not a data dump)
NORMALIZE_WORDS = {"seed": "(x − 0.5)/0.5, the seed notebook's", "standardize": "standardized with the training "
                   "set's mean and std", "none": "not normalized"}


def arch(config: dict, classes: int) -> str:
    hidden = [int(h) for h in config.get("hidden", [])]
    n_in = config.get("in_features") or IN_FEATURES.get(config.get("dataset"), "?")
    if len(hidden) > 2 and len(set(hidden)) == 1:
        return f"{n_in}-{hidden[0]}×{len(hidden)}-{classes}"
    return "-".join(str(v) for v in [n_in, *hidden, classes])


def scheme_words(init: str, scheme: dict) -> str:
    """``random = normal(std=0.01)``-style: the scheme an init string resolved to, when it says more."""
    params = scheme.get("params") or {}
    full = f"{scheme.get('name', init)}({', '.join(f'{k}={v}' for k, v in params.items())})" if params else \
        str(scheme.get("name", init))
    return init if full == init else f"{init} = {full}"


def network(config: dict, classes: int) -> tuple[str, str]:
    """(short name for the title, words for the configuration) of the compared network."""
    if config.get("model"):  # a zoo spec or the user's module:factory
        return str(config["model"]), f"{config['model']} (built fresh for every run)"
    net, act = arch(config, classes), config.get("activation", "?")
    return f"{net} {act} MLP", f"{net} MLP ({plural(len(config.get('hidden', [])), 'hidden layer')}), {act}"


def training_words(train: dict) -> str:
    opt = str(train.get("optimizer", "sgd"))
    words = f"{'SGD' if opt == 'sgd' else 'Adam' if opt == 'adam' else opt}, learning rate {num(train.get('lr')):g}"
    if opt == "sgd":
        words += f", momentum {num(train.get('momentum', 0)):g}"
    return words + f", batch {train.get('batch_size', '?')}, {plural(int(train.get('epochs', 0)), 'epoch')}"


# ---------------------------------------------------------------------------------------- tables


def per_init(config: dict, summary: dict | None, runs: pd.DataFrame | None) -> pd.DataFrame:
    """One row per init: compare's summary.json, or (interrupted before it was written) from runs.csv."""
    if summary and summary.get("per_init"):
        return pd.DataFrame(summary["per_init"])
    rows = []
    for init in config.get("inits", []):
        r = runs[runs["init"] == init] if runs is not None else pd.DataFrame()
        done = r[r["status"] == "done"] if len(r) else r
        acc = pd.to_numeric(done["final_test_acc"], errors="coerce") if len(done) else pd.Series(dtype=float)
        loss = pd.to_numeric(done["final_test_loss"], errors="coerce") if len(done) else pd.Series(dtype=float)
        rows.append({"init": init, "runs": len(r), "done": len(done),
                     "diverged": int((r["status"] == "diverged").sum()) if len(r) else 0,
                     "interrupted": int((~r["status"].isin(["done", "diverged"])).sum()) if len(r) else 0,
                     "final_test_acc_mean": acc.mean(), "final_test_acc_std": acc.std(ddof=1) if len(acc) > 1 else 0.0,
                     "final_test_loss_mean": loss.mean(), "final_test_loss_std": loss.std(ddof=1) if len(loss) > 1 else 0.0,
                     "at_chance": done["at_chance"].map(as_bool).all() if len(done) and "at_chance" in done else False,
                     "epochs_to_95": math.nan})
    return pd.DataFrame(rows)


def status_words(r) -> str:
    parts = [f"{int(n)} {label}" for n, label in ((r["done"], "done"), (r["diverged"], "diverged"),
                                                  (r["interrupted"], "unfinished")) if num(n) > 0]
    return ", ".join(parts) or "—"


def summary_rows(table: pd.DataFrame, keys: dict) -> list[dict]:
    rows = []
    for _, r in table.iterrows():
        done = int(num(r["done"]) or 0)
        if as_bool(r.get("at_chance")):
            reach = "at chance"
        elif done == 0:
            reach = "—"
        else:
            reach = "never" if not np.isfinite(num(r.get("epochs_to_95"))) else str(int(num(r["epochs_to_95"])))
        rows.append({"key": keys.get(r["init"], 0), "init": str(r["init"]),
                     "acc": pm(r["final_test_acc_mean"], r["final_test_acc_std"], done, 4),
                     "loss": pm(r["final_test_loss_mean"], r["final_test_loss_std"], done, 4),
                     "reach": reach, "status": status_words(r), "chance": as_bool(r.get("at_chance")),
                     "bad": int(num(r["diverged"]) or 0) > 0})
    return rows


def run_rows(runs: pd.DataFrame | None, keys: dict) -> list[dict]:
    if runs is None:
        return []
    rows = []
    for _, r in runs.iterrows():
        where = ""
        if r["status"] == "diverged":
            ep = num(r.get("diverged_epoch"))
            where = "at init" if ep == 0 else f"epoch {int(ep)}" if np.isfinite(ep) else "?"
            if np.isfinite(num(r.get("diverged_step"))):
                where += f", step {int(num(r['diverged_step']))}"
        rows.append({"key": keys.get(r["init"], 0), "init": str(r["init"]), "seed": text(r["seed"]),
                     "status": str(r["status"]), "epochs": text(r.get("epochs_done")),
                     "acc": f"{num(r.get('final_test_acc')):.4f}" if np.isfinite(num(r.get("final_test_acc"))) else "—",
                     "loss": fmt_value(num(r.get("final_test_loss"))) if np.isfinite(num(r.get("final_test_loss"))) else "—",
                     "where": where, "reason": text(r.get("diverge_reason")),
                     "chance": as_bool(r.get("at_chance"))})
    return rows


# ---------------------------------------------------------------------------------------- charts


def diverged_crosses(metrics: pd.DataFrame, runs: pd.DataFrame | None, init: str, column: str) -> list[Point]:
    out = []
    if runs is None:
        return out
    for _, r in runs[(runs["init"] == init) & (runs["status"] == "diverged")].iterrows():
        ep = num(r.get("diverged_epoch"))
        rows = metrics[(metrics["init"] == init) & (metrics["seed"] == r["seed"])]
        at = rows[rows["epoch"] == ep] if np.isfinite(ep) else rows.iloc[:0]
        y = num(at[column].iloc[-1]) if len(at) else math.nan
        where = "at init" if ep == 0 else f"in epoch {int(ep)}" if np.isfinite(ep) else ""
        if np.isfinite(num(r.get("diverged_step"))):
            where += f" (step {int(num(r['diverged_step']))})"
        out.append(Point(ep if np.isfinite(ep) else 0, y if np.isfinite(y) else None,
                         f"{init}, seed {r['seed']}: diverged {where}: {text(r.get('diverge_reason')) or 'see runs.csv'}"))
    return out


def epoch_chart(metrics: pd.DataFrame, runs: pd.DataFrame | None, inits, column: str, label: str, *,
                title: str, refs=(), ylim=None, caption: str = "") -> dict:
    """Seed-mean over finished runs per epoch (dots, hover), min–max band, every run faintly, × = diverged."""
    done = set()
    if runs is not None:
        done = {(i, s) for i, s, st in zip(runs["init"], runs["seed"], runs["status"]) if st == "done"}
    series = []
    for k, init in enumerate(inits):
        sub = metrics[metrics["init"] == init]
        fin = sub[[(init, s) in done for s in sub["seed"]]] if runs is not None else sub
        vals = pd.to_numeric(fin[column], errors="coerce").where(lambda v: np.isfinite(v))
        g = vals.groupby(fin["epoch"])
        pts, band = [], []
        for ep, v in g:
            v = v.dropna()
            if v.empty:
                continue
            spread = f" ± {v.std(ddof=1):.4g}" if len(v) > 1 else ""
            pts.append(Point(ep, v.mean(), f"{init}, epoch {ep}: {label} {v.mean():.4g}{spread} "
                                           f"(mean of {plural(len(v), 'finished run')})"))
            band.append((ep, v.min(), v.max()))
        thin = []
        if sub["seed"].nunique() > 1 or runs is not None and len(fin) < len(sub):
            for _, one in sub.groupby("seed"):
                thin.append([Point(e, y) for e, y in zip(one["epoch"], pd.to_numeric(one[column], errors="coerce"))])
        series.append(Series(k, init, pts, band if len(band) > 1 and sub["seed"].nunique() > 1 else [], thin,
                             diverged_crosses(metrics, runs, init, column)))
    return line_chart(series, xlabel="epoch", ylabel=label, title=title, refs=refs, ylim=ylim,
                      integer_x=True, caption=caption)


def step_chart(steps: pd.DataFrame, inits, per_epoch: int | None) -> dict:
    series = []
    for k, init in enumerate(inits):
        sub = steps[steps["init"] == init]
        loss = pd.to_numeric(sub["train_loss"], errors="coerce")
        loss = loss.where(np.isfinite(loss))
        mean = loss.groupby(sub["step"]).mean().dropna()
        if mean.empty:
            series.append(Series(k, init))
            continue
        bins = max(1, math.ceil(len(mean) / STEP_POINTS))
        groups = mean.groupby(np.arange(len(mean)) // bins)
        x = mean.index.to_series().groupby(np.arange(len(mean)) // bins).mean()
        pts = []
        for (gi, v), xs in zip(groups, x):
            at = xs / per_epoch if per_epoch else xs
            where = f"epoch {at:.2f}" if per_epoch else f"step {xs:.0f}"
            pts.append(Point(at, v.mean(), f"{init}, {where}: train loss {v.mean():.4g} "
                                           f"(mean over seeds{'' if bins == 1 else f' and {bins} steps'})"))
        series.append(Series(k, init, pts, markers=False, tip_every=max(1, len(pts) // 60)))
    return line_chart(series, xlabel="epoch" if per_epoch else "step", ylabel="train loss (per step)",
                      title="Training loss at every step",
                      caption="seed mean of the minibatch loss" + ("" if len(steps) < 2 * STEP_POINTS else
                                                                  ", averaged in bins of steps"))


def probe_charts(probe: pd.DataFrame, inits, epochs: int) -> list[dict]:
    """What happened inside the network: dead/saturated units, symmetry, gradient, rank; by epoch and by layer."""
    charts = []
    weight = probe[probe["distinct_units"].notna()] if "distinct_units" in probe else probe.iloc[:0]
    names = list(dict.fromkeys(weight["name"]))
    hidden = names[:-1] or names
    acts = probe[~probe["name"].isin(names)]

    def by_epoch(frame: pd.DataFrame, column: str, agg: str, label: str, title: str, caption: str, ylim=None,
                 ylog="auto"):
        series = []
        for k, init in enumerate(inits):
            sub = frame[frame["init"] == init]
            v = pd.to_numeric(sub[column], errors="coerce")
            per_run = v.groupby([sub["seed"], sub["epoch"]]).agg(agg).dropna()
            if per_run.empty:
                series.append(Series(k, init))
                continue
            g = per_run.groupby(level="epoch")
            pts = [Point(ep, vals.mean(), f"{init}, epoch {ep}: {label} {vals.mean():.4g}"
                                          + (f" ± {vals.std(ddof=1):.3g}" if len(vals) > 1 else ""))
                   for ep, vals in g]
            series.append(Series(k, init, pts))
        if not any(s.points for s in series):
            return
        charts.append(line_chart(series, xlabel="epoch (0 = at init)", ylabel=label, title=title,
                                 caption=caption, ylim=ylim, ylog=ylog, integer_x=True))

    if len(acts) and acts["dead_frac"].notna().any():
        by_epoch(acts, "dead_frac", "mean", "dead fraction", "Dead units",
                 "share of hidden units that output 0 for every probe example (mean over layers)", (0, 1), False)
    if len(acts) and "sat_frac" in acts and acts["sat_frac"].notna().any():
        by_epoch(acts, "sat_frac", "mean", "saturated fraction", "Saturated units",
                 "share of hidden units in the flat tails of the activation (mean over layers)", (0, 1), False)
    if len(hidden):
        by_epoch(weight[weight["name"].isin(hidden)], "distinct_units", "min", "distinct units",
                 "Symmetry: distinct hidden units", "fewest distinct units in any hidden layer; 1 = every unit "
                 "computes the same thing", None, False)
        by_epoch(weight[weight["name"] == names[0]], "grad_out_norm", "mean", "gradient norm",
                 f"Gradient reaching the first layer ({names[0]})", "norm of the loss gradient w.r.t. its output")
        by_epoch(weight[weight["name"] == hidden[-1]], "eff_rank", "mean", "effective rank",
                 f"Effective rank of the last hidden layer ({hidden[-1]})", "exp(entropy of its singular values)",
                 None, False)
    if len(names) >= 2:
        last = int(probe["epoch"].max())
        for column, label, title in (("out_std", "output std", "Signal by layer"),
                                     ("grad_out_norm", "gradient norm", "Gradient by layer")):
            series = []
            for k, init in enumerate(inits):
                sub = weight[weight["init"] == init]
                for ep, style in ((0, "faint"), (last, "main")):
                    at = sub[sub["epoch"] == ep]
                    v = pd.to_numeric(at[column], errors="coerce").groupby(at["name"]).mean()
                    when = "at init" if ep == 0 else f"after epoch {ep}"
                    pts = [Point(i, v.get(n, math.nan), f"{init}, {n}, {when}: {label} {fmt_value(v.get(n))}")
                           for i, n in enumerate(names)]
                    series.append(Series(k, init, pts, style=style))
            charts.append(line_chart(series, xlabel="layer", ylabel=label, title=title, xcategories=names,
                                     caption=f"faint: at init; bold: after epoch {last} (seed mean)"))
    return charts


# ---------------------------------------------------------------------------------------- reading


def probe_cause(probe: pd.DataFrame | None, init: str) -> str:
    """What the probe measured for an init after its last epoch that explains a failure, or ''."""
    if probe is None or probe.empty:
        return ""
    sub = probe[probe["init"] == init]
    if sub.empty:
        return ""
    last = sub[sub["epoch"] == sub["epoch"].max()]
    facts = []
    weight = last[last["distinct_units"].notna()] if "distinct_units" in last else last.iloc[:0]
    names = list(dict.fromkeys(weight["name"]))
    hidden = weight[weight["name"].isin(names[:-1])]
    if len(hidden) and pd.to_numeric(hidden["distinct_units"], errors="coerce").max() <= 1:
        facts.append(f"every hidden layer still has 1 distinct unit after epoch {int(last['epoch'].max())} "
                     "(the symmetry never broke)")
    dead = pd.to_numeric(last["dead_frac"], errors="coerce").dropna() if "dead_frac" in last else pd.Series(dtype=float)
    if len(dead) and dead.mean() >= 0.5:
        facts.append(f"{dead.mean():.0%} of its hidden units are dead")
    sat = pd.to_numeric(last["sat_frac"], errors="coerce").dropna() if "sat_frac" in last else pd.Series(dtype=float)
    if len(sat) and sat.mean() >= 0.5:
        facts.append(f"{sat.mean():.0%} of its hidden units are saturated")
    if names:
        g = pd.to_numeric(weight[weight["name"] == names[0]]["grad_out_norm"], errors="coerce").mean()
        others = probe[(probe["epoch"] == last["epoch"].max()) & (probe["name"] == names[0]) & (probe["init"] != init)]
        ref = pd.to_numeric(others["grad_out_norm"], errors="coerce").median()
        if np.isfinite(g) and np.isfinite(ref) and ref > 0 and g < ref / 100:
            facts.append(f"the gradient reaching {names[0]} is {fmt_value(g, 2)}, against {fmt_value(ref, 2)} "
                         "for the other inits (median)")
    return join_words(facts)


def reading(config: dict, table: pd.DataFrame, runs: pd.DataFrame | None, probe: pd.DataFrame | None,
            summary: dict | None) -> list[str]:
    """A few sentences computed from the numbers: who wins and by how much, who fails and why."""
    out = []
    seeds = int(config.get("seeds", 1))
    chance = (summary or {}).get("chance") or {}
    thr = num(chance.get("threshold"))
    done = table[table["done"].map(num) > 0]
    ranked = done[~done["at_chance"].map(as_bool)].sort_values("final_test_acc_mean", ascending=False)
    if (summary or {}).get("status") == "interrupted" or summary is None:
        if runs is not None:
            n, fin = len(runs), int(runs["status"].isin(["done", "diverged"]).sum())
            out.append(f"This comparison did not finish: {fin} of {n} runs finished; the numbers below cover only "
                       "those (rerun the same command with --resume to finish it).")
    if len(ranked):
        best = ranked.iloc[0]
        n_best = int(num(best["done"]))
        s = (f"{best['init']} reaches the best final test accuracy, "
             f"{pm(best['final_test_acc_mean'], best['final_test_acc_std'], n_best)}"
             f" ({'mean ± std over ' + plural(n_best, 'seed') if n_best > 1 else 'one run'}).")
        if len(ranked) > 1:
            second = ranked.iloc[1]
            gap = num(best["final_test_acc_mean"]) - num(second["final_test_acc_mean"])
            s += (f" The runner-up is {second['init']} at "
                  f"{pm(second['final_test_acc_mean'], second['final_test_acc_std'], int(num(second['done'])))}, "
                  f"{gap:.3f} behind. ") + paired_words(runs, best["init"], second["init"])
        out.append(s.strip())
        reach = {r["init"]: num(r.get("epochs_to_95")) for _, r in ranked.iterrows()}
        slow = [f"{i} after {int(e)}" for i, e in reach.items() if np.isfinite(e)]
        never = [i for i, e in reach.items() if not np.isfinite(e)]
        if len(slow) > 1 or never:
            msg = ""
            if slow:
                msg = f"Epochs to reach 95% of the best accuracy: {join_words(slow)}."
            if never:
                msg += (f" {join_words(never)} {'trains' if len(never) == 1 else 'train'} but "
                        f"{'does' if len(never) == 1 else 'do'} not reach 95% of the best within "
                        f"{plural(int(config.get('train', {}).get('epochs', 0)), 'epoch')}.")
            out.append(msg.strip())
    elif len(done):
        out.append("No init trained above chance level: every finished run ends no better than always answering "
                   "the most frequent class.")
    for _, r in done[done["at_chance"].map(as_bool)].iterrows():
        s = (f"{r['init']} stays at chance: {num(r['final_test_acc_mean']):.3f}"
             + (f", no better than {thr:.3f} (the majority class {num(chance.get('rate')):.3f} plus 3 binomial σ)"
                if np.isfinite(thr) else ""))
        cause = probe_cause(probe, r["init"])
        out.append(s + (f"; the probe shows {cause}." if cause else "."))
    if runs is not None:
        for init, div in runs[runs["status"] == "diverged"].groupby("init", sort=False):
            total = int((runs["init"] == init).sum())
            whats = []
            for reason, grp in div.groupby(div["diverge_reason"].map(text), sort=False):
                where = []
                for _, r in grp.iterrows():
                    ep = num(r.get("diverged_epoch"))
                    w = "at init" if ep == 0 else f"in epoch {int(ep)}" if np.isfinite(ep) else "?"
                    if np.isfinite(num(r.get("diverged_step"))):
                        w += f" step {int(num(r['diverged_step']))}"
                    where.append(f"seed {r['seed']} {w}")
                whats.append(f"{join_words(where)}: {reason or 'no reason recorded'}")
            out.append(f"{init} diverged in {div.shape[0]} of {total} runs ({'; '.join(whats)}); "
                       "diverged runs are left out of the means.")
        cut = runs[~runs["status"].isin(["done", "diverged"])]
        if len(cut):
            out.append(f"{plural(len(cut), 'run')} did not finish ({join_words(sorted(set(map(str, cut['status']))))}).")
    if seeds == 1 and len(ranked) > 1:
        out.append("With one seed there is no spread to judge these gaps by; rerun with --seeds 3 or more.")
    return out


def paired_words(runs: pd.DataFrame | None, a: str, b: str) -> str:
    """The paired-seed difference a − b: same initial-weight stream and batch order, only the init differs."""
    if runs is None:
        return ""
    fin = runs[runs["status"] == "done"]
    acc = fin.pivot_table(index="seed", columns="init", values="final_test_acc", aggfunc="first")
    if a not in acc or b not in acc:
        return ""
    d = (acc[a] - acc[b]).dropna()
    if len(d) < 2:
        return "With one paired seed there is no spread to judge the gap by."
    wins = int((d > 0).sum())
    words = (f"Paired by seed, {a} − {b} = {d.mean():+.3f} ± {d.std(ddof=1):.3f}, "
             f"{a} ahead in {wins} of {len(d)} seeds")
    if wins == len(d) and d.mean() > 2 * d.std(ddof=1) / math.sqrt(len(d)):
        return words + f": consistent across the {len(d)} seeds."
    return words + ": within the seed-to-seed spread, so this run does not separate them."


# ---------------------------------------------------------------------------------------- page


def build(folder: Folder, report) -> dict:
    config = folder.json("config.json") or {}
    summary = folder.json("summary.json")
    runs = folder.csv("runs.csv")
    metrics = folder.csv("metrics.csv")
    steps = folder.csv("steps.csv")
    probe = folder.csv("probe.csv") if config.get("probe", True) else None
    inits = [str(i) for i in config.get("inits") or (list(dict.fromkeys(runs["init"])) if runs is not None else [])]
    keys = {init: k for k, init in enumerate(inits)}
    table = per_init(config, summary, runs)
    chance = (summary or {}).get("chance") or {}
    classes = int(chance.get("classes", 10))
    train = config.get("train", {})
    net, net_words = network(config, classes)
    dataset = config.get("dataset", "?")

    charts, probe_figs = [], []
    refs = [(num(chance.get("threshold")), f"chance ≤ {num(chance.get('threshold')):.3f}")] if chance else []
    if metrics is not None and len(metrics):
        charts.append(epoch_chart(metrics, runs, inits, "test_acc", "test accuracy", title="Test accuracy",
                                  refs=refs, ylim=(0, 1),
                                  caption="dots: mean over finished runs (band: min–max); faint: single runs; "
                                          "×: a run that diverged"))
        charts.append(epoch_chart(metrics, runs, inits, "test_loss", "test loss", title="Test loss"))
        charts.append(epoch_chart(metrics, runs, inits, "train_loss", "train loss (epoch mean)",
                                  title="Training loss per epoch"))
    if steps is not None and len(steps):
        per_epoch = None
        if config.get("train_size") and train.get("batch_size"):
            per_epoch = math.ceil(int(config["train_size"]) / int(train["batch_size"]))
        charts.append(step_chart(steps, inits, per_epoch))
    if probe is not None and len(probe):
        probe_figs = probe_charts(probe, inits, int(train.get("epochs", 0)))

    words = [("network", net_words),
             ("data", f"{dataset}" + (f": {config['train_size']} training / {config['test_size']} test examples"
                                      if config.get("train_size") else "")
              + f"; inputs {NORMALIZE_WORDS.get(config.get('normalize'), config.get('normalize', '?'))}"),
             ("training", training_words(train)),
             ("seeds", f"{plural(int(config.get('seeds', 1)), 'paired seed')} from {config.get('first_seed', 0)}: "
                       "seed k gives every init the same initial-weight stream and the same batch order")]
    schemes = config.get("schemes") or {}
    words.append(("inits", "; ".join(scheme_words(i, schemes.get(i) or {}) for i in inits)))
    div = (summary or {}).get("divergence") or {}
    if div:
        words.append(("divergence", f"non-finite loss or activation, or an end-of-epoch test loss above "
                                    f"{num(div.get('diverge_loss')):g} × ln {classes} = {fmt_value(div.get('loss_bound'))} nats"))
    if chance:
        words.append(("chance", f"final accuracy ≤ {num(chance['threshold']):.3f}: the majority class "
                                f"({num(chance['rate']):.3f}) plus 3 binomial σ over {chance.get('test_size', '?')} "
                                "test examples"))
    words.append(("engine", f"{config.get('engine', '?')}; probe statistics "
                            + (f"on a fixed batch of {config.get('probe_size', '?')} examples at init and after "
                               "every epoch" if config.get("probe", True) else "off")))
    notes = []
    if summary is None:
        notes.append("summary.json is missing: the comparison was stopped before it finished (the table is "
                     "computed from runs.csv; chance level unknown).")
    elif summary.get("status") == "interrupted":
        notes.append("This comparison was interrupted: unfinished runs are marked and left out of the means.")
    title = f"compare: {', '.join(inits)} on {dataset}, {net}"
    return page(folder, report, template="compare.html.j2", title=title,
                question=f"Which of {join_words(inits)} trains {net} best on {dataset} in "
                         f"{plural(int(train.get('epochs', 0)), 'epoch')} of {training_words(train).split(',')[0]}, "
                         f"over {plural(int(config.get('seeds', 1)), 'paired seed')}?",
                reading=reading(config, table, runs, probe, summary), notes=notes,
                inits=legend(inits), summary_rows=summary_rows(table, keys), run_rows=run_rows(runs, keys),
                charts=charts, probe_charts=probe_figs, config_words=words,
                config_raw=raw_config_rows(config, skip={"torch", "python", "resolved_device"}),
                environment=run_env(folder, config, (summary or {}).get("seconds")),
                chance=chance)
