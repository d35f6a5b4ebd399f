"""Honest learning-rate selection: choose on validation, report on test, compare with paired seeds.

An init that loses at one fixed lr can win at its own best lr, so a fair comparison tunes lr per
init. Tuning on the test set would make every reported number optimistic; here each init's lr is
chosen on ``final_val_acc`` (the validation split carved from the training set, see
:func:`initlab.data.split_validation`), and only then is ``final_test_acc`` read, at that lr.

Rules (:func:`best_lr`):

* a run's score is its final validation accuracy; a **diverged** run scores 0 (an lr that blows up
  for some seeds is not the best lr), runs not finished (queued, running, failed, interrupted)
  are left out and counted in ``unfinished``;
* an lr's score is the mean over seeds; the best lr has the highest score (ties: the smaller
  lr); ``at_edge`` says it is the smallest or largest lr tried (widen the grid);
* ``test_pick_lr`` is what choosing on test would have picked, shown for contrast only.

:func:`paired_comparison` then compares inits each at its own best lr, seed by seed (seed *k*
gives every init the same data order), against the init with the best validation score.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

FINISHED = ("done", "diverged")


def context_columns(runs: pd.DataFrame) -> list[str]:
    """Axes other than init, lr and seed that vary in ``runs`` (selection is done per value of them)."""
    cols = ["dataset", "model", "optimizer", "momentum", "batch_size", "epochs"]
    return [c for c in cols if c in runs and runs[c].astype(str).nunique() > 1]


def scored(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """Finished runs with ``score``: ``metric``, 0 for a diverged run; and ``test``: final test accuracy
    (NaN for a diverged run: it has no trained model to report)."""
    if metric not in runs:
        raise ValueError(f"no column {metric!r} in the runs; choose from: "
                         f"{', '.join(c for c in runs.columns if c.startswith('final_'))}")
    fin = runs[runs["status"].isin(FINISHED)].copy()
    div = fin["status"] == "diverged"
    fin["score"] = pd.to_numeric(fin[metric], errors="coerce").astype(float)
    fin.loc[div, "score"] = 0.0
    fin["test"] = pd.to_numeric(fin["final_test_acc"], errors="coerce").astype(float)
    fin.loc[div, "test"] = np.nan
    return fin


def lr_table(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """Per (context, init, lr): score mean/std/min/max over seeds, test mean/std, runs, diverged."""
    fin = scored(runs, metric)
    keys = context_columns(runs) + ["init", "lr"]
    g = fin.groupby(keys, sort=False, dropna=False)
    out = g.agg(score_mean=("score", "mean"), score_std=("score", "std"), score_min=("score", "min"),
                score_max=("score", "max"), test_mean=("test", "mean"), test_std=("test", "std"),
                runs=("score", "size"), diverged=("status", lambda s: int((s == "diverged").sum())))
    return out.reset_index()


def best_lr(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """Per (context, init): the lr with the best mean validation score, and its test accuracy.

    Columns: context..., ``init``, ``best_lr``, ``val_mean``, ``val_std``, ``test_mean``,
    ``test_std``, ``seeds``, ``diverged`` (runs at that lr), ``at_edge``, ``lrs`` (tried),
    ``unfinished`` (runs not counted), ``test_pick_lr`` (what test-set selection would pick).
    """
    if metric.replace("final_", "").startswith("test"):
        raise ValueError(f"selecting on {metric!r} would tune on the test set; select on a validation metric "
                         "(final_val_acc, final_val_loss) and report test at the chosen lr")
    if runs["final_val_acc"].isna().all() if "final_val_acc" in runs else True:
        raise ValueError("these runs have no validation metrics (val_fraction = 0); rerun the sweep with "
                         "val_fraction > 0 to choose lr without looking at the test set")
    table = lr_table(runs, metric)
    ctx = context_columns(runs)
    unfinished = runs[~runs["status"].isin(FINISHED)].groupby(ctx + ["init"], sort=False, dropna=False).size()
    rows = []
    for key, sub in table.groupby(ctx + ["init"], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        lrs = sorted(sub["lr"])
        ranked = sub.sort_values(["score_mean", "lr"], ascending=[False, True])
        best = ranked.iloc[0]
        test_pick = sub.sort_values(["test_mean", "lr"], ascending=[False, True]).iloc[0]["lr"]
        rows.append({**dict(zip(ctx + ["init"], key)), "best_lr": best["lr"], "val_mean": best["score_mean"],
                     "val_std": best["score_std"], "test_mean": best["test_mean"], "test_std": best["test_std"],
                     "seeds": int(best["runs"]), "diverged": int(best["diverged"]),
                     "at_edge": len(lrs) > 1 and best["lr"] in (lrs[0], lrs[-1]), "lrs": len(lrs),
                     "unfinished": int(unfinished.get(key if len(key) > 1 else key[0], 0)),
                     "test_pick_lr": test_pick})
    return pd.DataFrame(rows)


def paired_comparison(runs: pd.DataFrame, best: pd.DataFrame | None = None,
                      reference: str | None = None) -> pd.DataFrame:
    """Each init at its own best lr against ``reference`` (default: the best validation score), seed by seed.

    Columns: context..., ``init``, ``best_lr``, ``test_mean``, ``test_std``, ``diff_mean``,
    ``diff_std`` (test accuracy minus the reference's, same seed), ``wins``/``pairs`` (seeds where it
    beats the reference), ``reference``. Diverged runs have no test accuracy: their pairs are dropped.
    """
    best = best_lr(runs) if best is None else best
    fin = scored(runs)
    ctx = context_columns(runs)
    out = []
    for key, sub in best.groupby(ctx, sort=False, dropna=False) if ctx else [((), best)]:
        key = key if isinstance(key, tuple) else (key,)
        ref = reference or sub.sort_values(["val_mean", "test_mean"], ascending=False).iloc[0]["init"]
        if ref not in set(sub["init"]):
            raise ValueError(f"reference init {ref!r} is not in the sweep; choose from: {', '.join(sub['init'])}")
        mask = np.ones(len(fin), dtype=bool)
        for c, v in zip(ctx, key):
            mask &= (fin[c] == v).to_numpy()
        here = fin[mask]

        def at_best(init):
            lr = sub.loc[sub["init"] == init, "best_lr"].iloc[0]
            r = here[(here["init"] == init) & (here["lr"] == lr)]
            return r.set_index("seed")["test"]

        ref_acc = at_best(ref)
        for r in sub.itertuples():
            acc = at_best(r.init)
            both = pd.concat([acc, ref_acc], axis=1, keys=["a", "r"]).dropna()
            d = both["a"] - both["r"]
            out.append({**dict(zip(ctx, key)), "init": r.init, "best_lr": r.best_lr, "val_mean": r.val_mean,
                        "test_mean": r.test_mean, "test_std": r.test_std,
                        "diff_mean": float(d.mean()) if len(d) else math.nan,
                        "diff_std": float(d.std()) if len(d) > 1 else math.nan,
                        "wins": int((d > 0).sum()), "pairs": int(len(d)), "reference": ref})
    return pd.DataFrame(out)


def fixed_lr_table(runs: pd.DataFrame, lr: float) -> pd.DataFrame:
    """Per (context, init): test accuracy mean/std at one fixed ``lr`` (the protocol being replaced)."""
    fin = scored(runs)
    sub = fin[np.isclose(fin["lr"].astype(float), lr)]
    if sub.empty:
        raise ValueError(f"lr {lr:g} is not in the sweep; choose from: {', '.join(f'{x:g}' for x in sorted(set(fin['lr'])))}")
    keys = context_columns(runs) + ["init"]
    g = sub.groupby(keys, sort=False, dropna=False)
    return g.agg(test_mean=("test", "mean"), test_std=("test", "std"), val_mean=("score", "mean"),
                 runs=("test", "size")).reset_index()


def inits_in_order(runs: pd.DataFrame) -> Sequence[str]:
    return list(dict.fromkeys(runs["init"]))
