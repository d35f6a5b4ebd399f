"""Results as text tables: what ``initlab`` prints in a terminal, as data.

Each function turns one result (a comparison, a depth sweep, a sweep plan, a sweep's runs, the
phase diagram, an audit, a coverage check, a probe summary) into a :class:`TextTable`: a title,
header, rows of formatted cells and a caption. The command line draws them with rich; nothing
here prints. Cells are plain text (shown verbatim, never read as markup) or a ``rich.text.Text``
where a cell carries a style (a flag, a status).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from rich.text import Text

from initlab.experiments.sweeps.select import best_lr, fixed_lr_table, paired_comparison
from initlab.models import arch_text
from initlab.training.memory import format_bytes


@dataclass(frozen=True)
class TextTable:
    """``rows`` of cells under ``columns``; the ``left`` columns are text (left-justified), the others numbers."""

    title: str | None
    columns: tuple[str, ...]
    rows: list[tuple] = field(default_factory=list)
    caption: str | None = None
    left: tuple[str, ...] = ()


def fmt(x: float | None, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals; ``—`` for a missing value (None or NaN)."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def sci(x: float | None) -> str:
    """``x`` to two significant digits (``1.3e-05``, ``0.5``); ``—`` for a missing value."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def status_cell(r) -> str:
    """``3 done`` / ``2 done, 1 diverged`` / ``1 done, 2 interrupted`` for one init's runs."""
    parts = [f"{n} {label}" for n, label in ((r.done, "done"), (r.diverged, "diverged"),
                                             (r.interrupted, "interrupted")) if n]
    return ", ".join(parts) or "—"


def data_line(spec, data) -> str:
    """``digits: 1437 train / 360 test, network 64-128-10 relu``: what a comparison trains on."""
    net = spec.arch if spec.model is not None else \
        f"{arch_text([data.in_features, *spec.hidden, data.num_classes])} {spec.activation}"
    return f"{spec.dataset}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test, network {net}"


def compare_summary(result) -> TextTable:
    """Per init: final test accuracy (mean ± std over the runs that finished), loss, epochs to 95% of the best."""
    spec, ch = result.spec, result.chance
    rows = []
    for r in result.summary.itertuples():
        if r.at_chance:
            reach = "at chance"
        elif r.done == 0:
            reach = "—"
        else:
            reach = "never" if math.isnan(r.epochs_to_95) else str(int(r.epochs_to_95))
        acc = fmt(r.final_test_acc_mean) + (f" ± {fmt(r.final_test_acc_std)}" if r.done > 1 else "")
        rows.append((r.init, acc, fmt(r.final_test_loss_mean), reach, status_cell(r)))
    return TextTable(
        f"{spec.dataset}: final test accuracy after {spec.train.epochs} epochs ({spec.seeds} "
        f"seed{'s' if spec.seeds > 1 else ''}){'' if result.complete else ' — INTERRUPTED, partial'}",
        ("init", "test acc (mean ± std)", "test loss", "epochs to 95% of best", "runs"), rows,
        f"mean over runs that finished every epoch; chance: ≤ {ch['threshold']:.3f} (majority class "
        f"{ch['rate']:.3f} + 3 binomial σ)" if ch else None, left=("init",))


def depth_summary(result) -> TextTable:
    """Final test accuracy per init (rows) and depth (columns), with diverged and at-chance marks."""
    net = f"width {result.width}, {result.activation}" if result.model is None else result.model
    s = result.summary.set_index(["init", "depth"])
    rows = []
    for init in result.inits:
        cells = []
        for d in result.depths:
            r = s.loc[(init, d)]
            cell = fmt(r["final_test_acc_mean"], 3)
            if r["done"] > 1:
                cell += f" ± {fmt(r['final_test_acc_std'], 3)}"
            if r["at_chance"]:
                cell += " (chance)"
            if r["diverged"]:
                cell += f" ({int(r['diverged'])}/{int(r['runs'])} div.)"
            cells.append(cell)
        rows.append((init, *cells))
    return TextTable(f"{result.dataset}: final test accuracy vs depth ({net}, {result.epochs} epochs, {result.seeds} "
                     f"seed{'s' if result.seeds > 1 else ''})", ("init", *(f"depth {d}" for d in result.depths)),
                     rows, "div.: runs diverged (not in the mean); (chance): no better than the majority class",
                     left=("init",))


def sweep_plan(plan) -> TextTable:
    """One row per engine group of a sweep plan: what it trains, how many at once, memory and time."""
    t = plan.table()
    rows = [(str(r.group), f"{r.model} · {r.dataset} · {r.optimizer} batch {r.batch_size} · {r.epochs} ep",
             str(r.runs), f"{r.inits}×{r.lrs}{f'×{r.momenta}m' if r.momenta > 1 else ''}×{r.seeds}",
             r.engine + (f" ({r.why})" if r.why else ""), f"{r.at_once}×{r.chunks}", format_bytes(r.memory),
             duration(r.seconds)) for r in t.itertuples()]
    return TextTable(
        f"plan: {len(plan.runs)} runs in {len(t)} engine group{'s' if len(t) != 1 else ''}, {plan.model_epochs} "
        f"model-epochs, ~{duration(plan.seconds)}, peak memory ~{format_bytes(plan.memory)}",
        ("group", "model, data, training", "runs", "inits×lrs×seeds", "engine", "at once", "memory", "time"), rows,
        f"a group trains as one batched computation (runs differ only in init, seed, lr, momentum), in chunks of "
        f"'at once'; time: FLOPs / {plan.gflops:.0f} GFLOP/s measured × engine efficiency (rough, ±2×)",
        left=("model, data, training", "engine"))


def best_lrs(runs: pd.DataFrame) -> TextTable | None:
    """Each init at its own best lr (on validation) and the paired test difference to the reference; None
    when the lr does not vary or nothing has validation metrics."""
    if runs.empty or runs["lr"].nunique() < 2 or runs["final_val_acc"].isna().all():
        return None
    best = best_lr(runs)
    paired = paired_comparison(runs, best)
    ctx = [c for c in best.columns if c not in ("init", "best_lr", "val_mean", "val_std", "test_mean", "test_std",
                                                "seeds", "diverged", "at_edge", "lrs", "unfinished", "test_pick_lr")]
    p = paired.set_index(ctx + ["init"]) if ctx else paired.set_index("init")
    rows = []
    for r in best.to_dict(orient="records"):
        q = p.loc[tuple(r[c] for c in ctx) + (r["init"],) if ctx else r["init"]]
        ref = q["reference"] == r["init"]
        d = round(float(q["diff_mean"]), 4) + 0.0  # + 0.0: no "-0.0000"
        diff = "reference" if ref else (f"{d:+.4f}" + (f" ± {q['diff_std']:.4f}" if q["pairs"] > 1 else ""))
        rows.append((*(str(r[c]) for c in ctx), str(r["init"]),
                     f"{r['best_lr']:g}" + (" (edge)" if r["at_edge"] else ""), fmt(r["val_mean"]),
                     fmt(r["test_mean"]) + (f" ± {fmt(r['test_std'])}" if r["seeds"] > 1 else ""),
                     diff, "" if ref else f"{q['wins']}/{q['pairs']}", f"{r['test_pick_lr']:g}"))
    return TextTable("each init at its own best lr (chosen on validation accuracy, mean over seeds; reported on test)",
                     (*ctx, "init", "best lr", "val acc", "test acc (mean ± std)", "vs reference (paired)", "wins",
                      "test would pick"), rows,
                     "paired: test accuracy minus the reference's (the best on validation), same seeds; "
                     "edge: the best lr is the grid's smallest or largest (widen it)", left=(*ctx, "init"))


def fixed_lr(runs: pd.DataFrame, lr: float) -> TextTable:
    """The fixed-lr protocol: every init's test accuracy at the one learning rate ``lr``."""
    rows = [(str(r["init"]), fmt(r["test_mean"]) + (f" ± {fmt(r['test_std'])}" if r["runs"] > 1 else ""),
             fmt(r["val_mean"]), str(r["runs"])) for r in fixed_lr_table(runs, lr).to_dict(orient="records")]
    return TextTable(f"the same inits at one fixed lr {lr:g} (test accuracy)", ("init", "test acc", "val acc", "runs"),
                     rows, left=("init",))


RUN_COLUMNS = ("id", "hash", "init", "lr", "seed", "model", "dataset", "status", "epochs_done", "final_val_acc",
               "final_test_acc", "attempts")
COUNTS = ("runs", "done", "diverged", "failed", "interrupted", "running", "queued")
RUN_FIELDS = ("status", "attempts", "engine", "epochs_done", "final_val_acc", "final_test_acc", "final_train_acc",
              "diverged_epoch", "diverged_step", "diverge_reason", "error", "seconds", "worker", "sweeps")
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "diverged")


def sweep_list(sweeps: pd.DataFrame, store) -> TextTable:
    """The sweeps in a run store with their run counts by status."""
    rows = [(str(r.id), r.name, r.hash, *(str(int(getattr(r, c) or 0)) for c in COUNTS)) for r in sweeps.itertuples()]
    return TextTable(f"sweeps in {store}", ("id", "name", "hash", *COUNTS), rows, left=("name", "hash"))


def run_list(runs: pd.DataFrame, sweep: dict | None, limit: int) -> TextTable:
    """The first ``limit`` runs (of one sweep, or of all) with their status and final accuracies."""
    rows = [tuple(fmt(r[c]) if c.startswith("final_") else str(r[c]) for c in RUN_COLUMNS)
            for r in runs.head(limit).to_dict(orient="records")]
    return TextTable(f"runs of {sweep['name'] if sweep else 'all sweeps'} ({len(runs)})", RUN_COLUMNS, rows,
                     left=RUN_COLUMNS)


def run_card(info: dict) -> TextTable:
    """One run of a run store: its parameters, then its status, timings and outcome."""
    rows = [(k, str(v)) for k, v in info["params"].items()]
    rows += [(k, fmt(v) if isinstance(v := info.get(k), float) else str(v)) for k in RUN_FIELDS]
    return TextTable(f"run {info['id']} ({info['hash']}): {info['status']}", ("field", "value"), rows,
                     left=("field", "value"))


def run_epochs(epochs: pd.DataFrame) -> TextTable:
    """Every epoch of one run: losses and accuracies on each split, and whether it diverged there."""
    rows = [tuple(str(r[c]) if c in ("epoch", "diverged") else fmt(r[c]) for c in EPOCH_COLUMNS)
            for r in epochs.to_dict(orient="records")]
    return TextTable("epochs", EPOCH_COLUMNS, rows)


def phase_grid(table, *, dataset: str, width: int, epochs: int) -> TextTable:
    """Final training accuracy in % per depth (rows) and σ_w² (columns); ``*`` where depth < 6 ξ_c."""
    grid = table.cells.pivot(index="depth", columns="sigma_w2", values="train_acc")
    pred = table.cells.set_index(["depth", "sigma_w2"])["predicted"]
    rows = [(str(d), *(("—" if math.isnan(v) else f"{100 * v:.0f}") + ("*" if pred.get((d, s), False) else " ")
                       for s, v in row.items())) for d, row in grid.iterrows()]
    return TextTable(f"final training accuracy, % ({dataset}, width {width}, {epochs} epochs); * = depth < 6 ξ_c",
                     ("depth", *(f"{s:g}" for s in grid.columns)), rows)


def audit_summary(run) -> TextTable:
    """Per candidate scheme: forward and backward signal ratios, logit std, Jacobian, time and flags."""
    rows = [(r.scheme + (" *" if r.recommended else ""), sci(r.forward_ratio), sci(r.grad_ratio), sci(r.logit_std),
             "—" if r.jac_mean_sq != r.jac_mean_sq else f"{sci(r.jac_mean_sq)} ({r.jac_decades:.1f})",
             "—" if r.seconds != r.seconds else f"{r.seconds:.1f}",
             Text(r.flags or "healthy", style="green" if not r.flags else "yellow"))
            for r in run.report.summary().itertuples()]
    return TextTable(
        f"{run.name}: signal at init, example batch of {run.batch}",
        ("scheme", "forward", "gradient", "logit std", "Jacobian σ² (decades)", "seconds", "flags"), rows,
        "forward: RMS of the last hidden representation over the first (healthy 0.5–2); gradient: first/last hidden "
        "weight-gradient norm (healthy 0.1–10); logit std at init (healthy ≤ 3); Jacobian (with --jacobian): mean "
        "squared singular value of d logits / d input (decades spanned by the middle 90%)", left=("scheme", "flags"))


def coverage_faults(result) -> TextTable:
    """The tensors a model's own init leaves unwritten, writes twice, unties or draws otherwise than eagerly."""
    rows = [(t.tensor, "×".join(map(str, t.shape)) or "scalar", str(t.unwritten), str(t.twice),
             f"{sci(t.std)} ({sci(t.eager_std)})", ", ".join(t.writers) or "—", ", ".join(t.tied_with),
             Text(t.status, style="green" if t.status == "ok" else "red")) for t in result.faults]
    return TextTable(
        f"{result.model}: its own init on fresh storage",
        ("tensor", "shape", "unwritten", "twice", "std (eager)", "written by", "tied with", "status"), rows,
        "unwritten: elements no init call wrote; twice: elements a later call overwrote (not a later phase, an "
        "enclosing module or a co-owner of a tied tensor); std: after the init path (of the model built eagerly)",
        left=("tensor", "written by", "tied with", "status"))


def _pair(measured, predicted) -> str:
    if predicted is None or (isinstance(predicted, float) and math.isnan(predicted)):
        return sci(measured)
    return f"{sci(measured)} ({sci(predicted)})"


def probe_summary(summary: pd.DataFrame, title: str) -> TextTable:
    """Per (activation, init): measured (predicted) stds, gradient ratio, dead/saturated units, symmetry, Jacobian."""
    rows = [(r.activation, r.init, _pair(r.std_first, r.pred_std_first), _pair(r.std_mid, r.pred_std_mid),
             _pair(r.std_last, r.pred_std_last), _pair(r.grad_first_over_last, r.pred_grad_first_over_last),
             fmt(r.dead_frac, 2), fmt(r.sat_frac, 2),
             "—" if r.distinct_min != r.distinct_min else str(int(r.distinct_min)),
             "—" if r.jac_mean_sq != r.jac_mean_sq else f"{sci(r.jac_mean_sq)} ({r.jac_decades:.1f})")
            for r in summary.itertuples()]
    return TextTable(title, ("activation", "init", "std first", "std mid", "std last", "grad first/last", "dead", "sat",
                             "min distinct units", "Jacobian σ² (decades)"), rows, left=("activation", "init"))


def sweep_counts(result, name: str, store) -> str:
    """``name: 12 runs: 10 done, 1 diverged, 0 failed, 1 unfinished; 11 trained now in 3.2 s; store runs/sweeps.db``."""
    c = result.counts
    return (f"{name}: {len(result.runs)} runs: {c['done']} done, {c['diverged']} diverged, {c['failed']} failed, "
            f"{c['interrupted'] + c['queued'] + c['running']} unfinished; {result.trained} trained now in "
            f"{result.seconds:.1f} s; store {store}")


def claim_list(claims) -> TextTable:
    """Every claim: its id, where it is made, and the claim in a few words."""
    return TextTable("claims of the seed notebook", ("id", "section", "claim"),
                     [(c.id, c.section, c.short) for c in claims], left=("id", "section", "claim"))


VERDICT_STYLE = {"confirmed": "green", "refuted": "red", "depends": "yellow"}


def claim_verdicts() -> TextTable:
    """The verdicts table, empty: :func:`claim_row` adds each claim's as it is checked."""
    columns = ("id", "claim", "verdict", "evidence")
    return TextTable("the seed notebook's claims, tested", columns, left=columns)


def claim_row(claim, res) -> tuple:
    """A claim's row of :func:`claim_verdicts`: the verdict coloured, its condition, the evidence in a sentence."""
    verdict = Text.assemble((res.verdict, VERDICT_STYLE[res.verdict]), f" ({res.condition})" if res.condition else "")
    return claim.id, claim.short, verdict, res.summary


def scheme_list(schemes: dict, aliases: dict) -> TextTable:
    """The init schemes (name -> scheme): name, aliases (alias -> name in ``aliases``), its docstring's first line."""
    rows = [(n, ", ".join(sorted(a for a, t in aliases.items() if t == n)),
             ((getattr(s.fn, "__doc__", None) or "").strip().splitlines() or [""])[0]) for n, s in schemes.items()]
    return TextTable("init schemes", ("name", "aliases", "summary"), rows, left=("name", "aliases", "summary"))


def model_list(entries: dict) -> TextTable:
    """The model zoo (name -> registry entry): input layout, depth parameter, parameters with defaults, summary."""
    columns = ("model", "input", "depth sweeps", "parameters (defaults)", "what it is")
    rows = [(n, e.layout, e.depth_param, ", ".join(f"{k}={v}" for k, v in e.defaults.items()), e.summary)
            for n, e in entries.items()]
    return TextTable("initlab models (use as --model 'name(key=value,...)', or your own 'module:factory')", columns,
                     rows, left=columns)


def coord_growth(coords: pd.DataFrame, growth: pd.DataFrame, head: str, widths) -> TextTable:
    """μP's coordinate check at the output layer ``head``: l1 at the smallest and largest width, SP vs μP."""
    columns = ("parametrization", "l1 at min width", "l1 at max width", "ratio")
    rows = [(r["parametrization"], fmt(r["l1_min_width"]), fmt(r["l1_max_width"]), fmt(r["ratio"]))
            for _, r in growth[growth["layer"] == head].iterrows()]
    return TextTable(f"output ({head}) l1 at step {int(coords['step'].max())}: width {min(widths)} → {max(widths)}",
                     columns, rows, left=columns)
