"""Sweeps: grids of runs (:mod:`~initlab.sweeps.spec`), planned (:mod:`~initlab.sweeps.plan`), run
batched by engine group (:mod:`~initlab.sweeps.run`) into a SQLite run store that survives
``kill -9`` (:mod:`~initlab.sweeps.runstore`); learning rates chosen on a validation split
(:mod:`~initlab.sweeps.select`); the trainability phase diagram (:mod:`~initlab.sweeps.phase`).
"""
from initlab.sweeps import phase  # noqa: F401  (registers the mean_field init scheme)
from initlab.sweeps.plan import SweepPlan, make_plan
from initlab.sweeps.run import SweepReporter, SweepResult, run_sweep
from initlab.sweeps.runstore import DEFAULT_STORE, STATUSES, RunStore
from initlab.sweeps.spec import AXES, SweepSpec, describe, group_key, load_spec, run_hash

__all__ = ["AXES", "DEFAULT_STORE", "STATUSES", "RunStore", "SweepPlan", "SweepReporter", "SweepResult", "SweepSpec",
           "describe", "group_key", "load_spec", "make_plan", "run_hash", "run_sweep"]
