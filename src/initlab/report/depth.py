"""The page of a ``depth`` sweep: where each init stops training, with the measured reason."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from initlab.report.charts import Point, Series, line_chart
from initlab.report.common import (
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
from initlab.report.compare import NORMALIZE_WORDS, epoch_chart, training_words


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every (depth, init, seed) run."""
    return metrics.sort_values("epoch").groupby(["depth", "init", "seed"], sort=False).tail(1)


def diverge_text(last: pd.DataFrame) -> str:
    """``2 of 2 runs diverged (non-finite activation (fc12) at init)`` for one (init, depth)."""
    div = last[last["diverged"].map(as_bool)]
    if div.empty:
        return ""
    reasons = []
    for reason, grp in div.groupby(div["diverge_reason"].map(text), sort=False):
        eps = sorted({int(num(e)) for e in grp["epoch"] if np.isfinite(num(e))})
        when = join_words(["at init" if e == 0 else f"in epoch {e}" for e in eps])
        reasons.append(f"{reason or 'no reason recorded'} {when}".strip())
    return f"{len(div)} of {len(last)} runs diverged ({'; '.join(reasons)})"


def by_init(summary: pd.DataFrame, inits, depths):
    """``(init, [(depth, summary row or None, runs done), ...])`` for every init, depths in order."""
    s = summary.set_index(["init", "depth"])
    for init in inits:
        rows = [s.loc[(init, d)] if (init, d) in s.index else None for d in depths]
        yield init, [(d, r, int(num(r["done"]) or 0) if r is not None else 0) for d, r in zip(depths, rows)]


def reading(inits, depths, summary: pd.DataFrame, metrics: pd.DataFrame | None, thr: float) -> list[str]:
    out = []
    last = final_rows(metrics) if metrics is not None and len(metrics) else None
    for init, row in by_init(summary, inits, depths):
        cells = [(d, r, done, done > 0 and not as_bool(r["at_chance"])) for d, r, done in row if r is not None]
        if not cells:
            continue
        ok = [c for c in cells if c[3]]
        bad = [c for c in cells if not c[3]]
        acc = {d: pm(r["final_test_acc_mean"], r["final_test_acc_std"], done) for d, r, done, _ in cells}
        if not bad:
            first, lastc = cells[0], cells[-1]
            msg = f"{init} trains at every depth tested ({acc[first[0]]} at depth {first[0]}"
            if len(cells) > 1:
                msg += f", {acc[lastc[0]]} at depth {lastc[0]}"
            out.append(msg + ").")
            continue
        if not ok:
            msg = f"{init} does not train at any depth tested"
        else:
            deepest_ok = max(c[0] for c in ok)
            first_bad = min(c[0] for c in bad)
            if first_bad > deepest_ok:
                msg = (f"{init} trains up to depth {deepest_ok} ({acc[deepest_ok]}) and stops from depth {first_bad}")
            else:
                msg = (f"{init} trains at depth{'s' if len(ok) > 1 else ''} {join_words([str(c[0]) for c in ok])} "
                       f"but not at {join_words([str(c[0]) for c in bad])}")
        why, chance_at = [], []
        for d, r, done, _ in bad:
            sub = last[(last["init"] == init) & (last["depth"] == d)] if last is not None else None
            dv = diverge_text(sub) if sub is not None else ""
            if dv:
                why.append(f"depth {d}: {dv}")
            elif done:
                chance_at.append((d, num(r["final_test_acc_mean"])))
            else:
                why.append(f"depth {d}: no finished run")
        if chance_at:
            accs = sorted({f"{a:.3f}" for _, a in chance_at})
            where = "every depth" if len(chance_at) == len(cells) else \
                f"depth{'s' if len(chance_at) > 1 else ''} {join_words([str(d) for d, _ in chance_at])}"
            why.insert(0, f"at chance at {where} ({' to '.join([accs[0], accs[-1]] if len(accs) > 1 else accs)}"
                          + (f", chance ≤ {thr:.3f})" if np.isfinite(thr) else ")"))
        out.append(f"{msg}: {'; '.join(why)}.")
    deepest = max(depths) if depths else None
    if deepest is not None:
        at = summary[(summary["depth"] == deepest) & (summary["done"].map(num) > 0)
                     & ~summary["at_chance"].map(as_bool)].sort_values("final_test_acc_mean", ascending=False)
        if len(at):
            best = at.iloc[0]
            msg = (f"At the deepest depth ({deepest}) {best['init']} is best with "
                   f"{pm(best['final_test_acc_mean'], best['final_test_acc_std'], int(num(best['done'])))}")
            if len(at) > 1:
                second = at.iloc[1]
                msg += (f", {num(best['final_test_acc_mean']) - num(second['final_test_acc_mean']):.3f} ahead of "
                        f"{second['init']}")
            out.append(msg + ".")
        else:
            out.append(f"At the deepest depth ({deepest}) no init trains above chance.")
    return out


def depth_chart(summary: pd.DataFrame, metrics: pd.DataFrame | None, inits, depths, thr: float) -> dict:
    last = final_rows(metrics) if metrics is not None and len(metrics) else None
    series = []
    for k, init in enumerate(inits):
        sub = summary[summary["init"] == init].sort_values("depth")
        pts, band, crosses = [], [], []
        for _, r in sub.iterrows():
            d, done = int(r["depth"]), int(num(r["done"]) or 0)
            tip = (f"{init}, depth {d}: {pm(r['final_test_acc_mean'], r['final_test_acc_std'], done)} "
                   f"({plural(done, 'finished run')}" + (", at chance)" if as_bool(r["at_chance"]) else ")"))
            pts.append(Point(d, num(r["final_test_acc_mean"]), tip))
            if last is not None:
                runs = last[(last["init"] == init) & (last["depth"] == d)]
                acc = pd.to_numeric(runs.loc[~runs["diverged"].map(as_bool), "test_acc"], errors="coerce").dropna()
                if len(acc) > 1:
                    band.append((d, acc.min(), acc.max()))
                dv = diverge_text(runs)
                if dv:
                    crosses.append(Point(d, None, f"{init}, depth {d}: {dv}"))
        series.append(Series(k, init, pts, band if len(band) > 1 else [], crosses=crosses))
    xlog = bool(depths) and min(depths) > 0 and max(depths) / min(depths) >= 5
    refs = [(thr, f"chance ≤ {thr:.3f}")] if np.isfinite(thr) else []
    return line_chart(series, xlabel="depth (hidden layers)", ylabel="final test accuracy", ylim=(0, 1),
                      xlog=xlog, refs=refs, title="Final test accuracy against depth", integer_x=True,
                      caption="mean over finished runs, band: min–max over seeds; × on the axis: diverged runs")


def build(folder: Folder, report) -> dict:
    sweep = folder.json("sweep.json") or {}
    summary = folder.csv("depth_summary.csv")
    metrics = folder.csv("depth_metrics.csv")
    inits = [str(i) for i in sweep.get("inits") or (list(dict.fromkeys(summary["init"])) if summary is not None else [])]
    depths = [int(d) for d in sweep.get("finished_depths") or sweep.get("depths") or
              (sorted(summary["depth"].unique()) if summary is not None else [])]
    planned = [int(d) for d in sweep.get("depths", depths)]
    keys = {init: k for k, init in enumerate(inits)}
    sub_config, sub_summary = {}, {}
    for d in depths:  # the environment and chance level live in each depth's own comparison
        sub = Folder(folder.path / f"depth_{d:02d}", {"kind": "compare"})
        sub_config = sub.json("config.json") or sub_config
        sub_summary = sub.json("summary.json") or sub_summary
        if sub_config and sub_summary:
            break
    chance = (sub_summary or {}).get("chance") or {}
    thr = num(chance.get("threshold"))
    charts, grid = [], []
    if summary is not None and len(summary):
        charts.append(depth_chart(summary, metrics, inits, depths, thr))
        last = final_rows(metrics) if metrics is not None and len(metrics) else None
        for init, row in by_init(summary, inits, depths):
            cells = []
            for d, r, done in row:
                if r is None:
                    cells.append({"text": "—", "cls": ""})
                    continue
                cell = pm(r["final_test_acc_mean"], r["final_test_acc_std"], done)
                cls = ""
                if as_bool(r["at_chance"]):
                    cell += " (chance)"
                    cls = "chance"
                if num(r["diverged"]) > 0:
                    cell += f" ({int(num(r['diverged']))}/{int(num(r['runs']))} div.)"
                    cls = "bad"
                runs = last[(last["init"] == init) & (last["depth"] == d)] if last is not None else None
                cells.append({"text": cell, "cls": cls, "tip": diverge_text(runs) if runs is not None else ""})
            grid.append({"key": keys[init], "init": init, "cells": cells})
    if metrics is not None and len(metrics):
        for d in depths:
            m = metrics[metrics["depth"] == d]
            runs = Folder(folder.path / f"depth_{d:02d}", {"kind": "compare"}).csv("runs.csv")
            charts.append(epoch_chart(m, runs, inits, "test_acc", "test accuracy", title=f"Depth {d}: test accuracy",
                                      ylim=(0, 1), refs=[(thr, "chance")] if np.isfinite(thr) else []))
    width, act, dataset = sweep.get("width", "?"), sweep.get("activation", "?"), sweep.get("dataset", "?")
    train = {k: sweep.get(k) for k in ("optimizer", "lr", "momentum", "batch_size", "epochs")}
    words = [("network", f"{act} MLPs of width {width}, with as many hidden layers as the depth"),
             ("depths", ", ".join(map(str, planned)) + ("" if depths == planned else
                                                        f" (finished: {', '.join(map(str, depths)) or 'none'})")),
             ("data", f"{dataset}; inputs {NORMALIZE_WORDS.get(sweep.get('normalize'), sweep.get('normalize', '?'))}"),
             ("training", training_words(train)),
             ("seeds", f"{plural(int(sweep.get('seeds', 1)), 'paired seed')} from {sweep.get('first_seed', 0)}, "
                       "the same for every init and depth"),
             ("inits", ", ".join(inits))]
    if np.isfinite(thr):
        words.append(("chance", f"final accuracy ≤ {thr:.3f} (majority class {num(chance.get('rate')):.3f} + 3 binomial σ)"))
    notes = []
    if depths != planned:
        notes.append(f"This sweep did not finish: {plural(len(depths), 'depth')} of {len(planned)} are on disk.")
    base = Path(report).resolve().parent
    subs = {d: quote(Path(os.path.relpath((folder.path / f"depth_{d:02d}" / "report.html").resolve(), base)).as_posix())
            for d in depths if (folder.path / f"depth_{d:02d}" / "report.html").exists()}
    return page(folder, report, template="depth.html.j2",
                title=f"depth: {', '.join(inits)} on {dataset}, width-{width} {act} MLPs",
                question=f"As the {act} MLP gets deeper (depths {', '.join(map(str, planned))}), at what depth does "
                         f"each of {join_words(inits)} stop training on {dataset}?",
                reading=reading(inits, depths, summary, metrics, thr) if summary is not None else [],
                notes=notes, inits=legend(inits), grid=grid, depths=depths, charts=charts, subreports=subs,
                config_words=words, config_raw=raw_config_rows(sweep),
                environment=run_env(folder, sub_config, sweep.get("seconds")), chance=chance)
