"""Sweeps: grids of runs (:mod:`~initlab.experiments.sweeps.spec`), planned (:mod:`~initlab.experiments.sweeps.plan`), run
batched by engine group (:mod:`~initlab.experiments.sweeps.run`) into a SQLite run store that survives
``kill -9`` (:mod:`~initlab.experiments.sweeps.runstore`); learning rates chosen on a validation split
(:mod:`~initlab.experiments.sweeps.select`); the trainability phase diagram (:mod:`~initlab.experiments.sweeps.phase`).
"""
from initlab.experiments.sweeps import phase  # noqa: F401  (registers the mean_field init scheme)
from initlab.experiments.sweeps.plan import SweepPlan, make_plan
from initlab.experiments.sweeps.run import SweepReporter, SweepResult, run_sweep
from initlab.experiments.sweeps.runstore import DEFAULT_STORE, STATUSES, RunStore
from initlab.experiments.sweeps.spec import AXES, SweepSpec, describe, group_key, load_spec, run_hash

__all__ = ["AXES", "DEFAULT_STORE", "STATUSES", "RunStore", "SweepPlan", "SweepReporter", "SweepResult", "SweepSpec",
           "describe", "group_key", "load_spec", "make_plan", "run_hash", "run_sweep"]
