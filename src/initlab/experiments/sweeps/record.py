"""``compare --store``: a finished comparison's runs written into the sweep run store.

A comparison is the sweep ``inits × seeds`` at one lr, with no validation split (``val_fraction 0``:
the engines evaluate the test set, exactly as ``compare`` does; tests/test_sweeps_store.py checks
that such a sweep gives ``compare``'s numbers). :func:`compare_sweep` writes that sweep, so each
run gets the same parameters and hash a ``sweep`` of it would give; :func:`record_compare` then
commits every finished run of the result (one transaction per run) under those hashes. A later
``initlab sweep`` over the same runs skips them as done, and ``initlab runs`` lists, shows and
exports them with the rest. Runs already finished in the store are kept as they are; unfinished
compare runs are left ``interrupted`` for a sweep to finish.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from initlab.experiments.sweeps.plan import make_plan
from initlab.experiments.sweeps.runstore import RunStore, worker_id
from initlab.experiments.sweeps.spec import SweepSpec, group_key, spec_from_options


def compare_sweep(spec) -> SweepSpec:
    """The :class:`SweepSpec` whose runs are exactly ``spec``'s (an ``initlab.experiments.compare.CompareSpec``).

    ValueError (one line) for comparisons a sweep cannot express: hidden layers of different widths
    (sweep axes are depth × width) or a model given as a Python callable.
    """
    t = spec.train
    axes = {"inits": list(spec.inits), "seed": list(spec.run_seeds), "lr": t.lr, "momentum": t.momentum,
            "optimizer": t.optimizer, "batch_size": t.batch_size, "epochs": t.epochs, "dataset": spec.dataset}
    if spec.model is None:
        if len(set(spec.hidden)) > 1 or not spec.hidden:
            raise ValueError(f"--store needs hidden layers of one width (the store's axes are depth × width), got "
                             f"{','.join(map(str, spec.hidden)) or 'none'}")
        axes.update(depth=len(spec.hidden), width=spec.hidden[0], activation=spec.activation)
    elif isinstance(spec.model, str):
        axes["model"] = spec.model
    else:
        raise ValueError("--store needs the model as a zoo spec or 'module:factory' text, not a Python callable")
    options = {"name": f"compare {spec.dataset} {spec.arch}", "val_fraction": 0, "normalize": spec.normalize,
               "data_dir": spec.data_dir, "diverge_loss": t.diverge_loss, "device": spec.device, "engine": spec.engine}
    return spec_from_options({**axes, **options})


def record_compare(result, store: str | Path) -> dict:
    """Commit ``result``'s finished runs (a ``CompareResult``) into the run store at ``store``.

    Returns counts: ``recorded`` (committed now), ``kept`` (already finished in the store) and
    ``unfinished`` (not finished in the comparison; left ``interrupted`` in the store).
    """
    sweep_spec = compare_sweep(result.spec)
    plan = make_plan(sweep_spec, gflops=math.nan)
    st = RunStore(store)
    worker = worker_id()
    counts = {"recorded": 0, "kept": 0, "unfinished": 0}
    try:
        sweep_id = st.add_sweep(sweep_spec.name, sweep_spec.to_dict(), sweep_spec.hash, plan.runs, plan.hashes,
                                [group_key(r) for r in plan.runs])
        runs = result.runs.set_index(["init", "seed"]) if len(result.runs) else None
        metrics = result.metrics
        started = time.time() - result.seconds
        skip: set[int] = set()
        while True:
            claimed = st.claim(sweep_id, worker, plan.caps(), exclude=skip)
            if not claimed:
                break
            unfinished = []
            for c in claimed:
                key = (c.params["init"], c.params["seed"])
                row = runs.loc[key] if runs is not None and key in runs.index else None
                status = None if row is None else row["status"]
                if status not in ("done", "diverged"):
                    unfinished.append(c.id)
                    continue
                m = metrics[(metrics["init"] == key[0]) & (metrics["seed"] == key[1])].sort_values("epoch")
                rows = [{"epoch": int(r.epoch), "train_loss": _num(r.train_loss), "test_loss": _num(r.test_loss),
                         "test_acc": _num(r.test_acc), "diverged": bool(r.diverged)} for r in m.itertuples()]
                div = status == "diverged"
                ok = st.finish(c.id, worker, status=status, rows=rows, engine="compare", started=started,
                               diverged_epoch=_int(row.get("diverged_epoch")) if div else None,
                               diverged_step=_int(row.get("diverged_step")) if div else None,
                               diverge_reason=row.get("diverge_reason") if div else None)
                counts["recorded"] += int(ok)
            if unfinished:
                st.release(worker, "interrupted", "unfinished in compare", unfinished)
                skip.update(unfinished)
                counts["unfinished"] += len(unfinished)
        counts["kept"] = len(plan.runs) - counts["recorded"] - counts["unfinished"]
    finally:
        st.close()
    return counts


def record_results(results, store: str | Path) -> dict:
    """:func:`record_compare` for each of ``results`` (a comparison, or a depth sweep's comparisons), counts summed;
    a store that cannot take them is a one-line ValueError naming it."""
    total = {"recorded": 0, "kept": 0, "unfinished": 0}
    try:
        for result in results:
            for k, n in record_compare(result, store).items():
                total[k] += n
    except (ValueError, OSError) as e:
        raise ValueError(f"recording into the run store '{store}' failed: {e}") from None
    return total


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v):
    f = _num(v)
    return None if f is None else int(f)
