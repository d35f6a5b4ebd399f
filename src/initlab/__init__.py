"""initlab: a lab for neural-network weight initialization.

The public API, listed once in ``__all__`` (tests/test_public_api.py holds it):

- schemes: ``initialize`` any network by one scheme or rules per name/type, ``initialize_with_report``,
  ``list_schemes``, ``get_scheme``, ``register_scheme``, ``parse_scheme``; meta-device models
  (``initialize(..., device=)`` materializes them; ``materialize`` keeps ties); each rank's shard of
  FSDP2/DTensor parameters, the same weights at any world size (``initialize_sharded``);
- data (``load_dataset``) and models (``mlp``; the zoo by spec: ``make_model("resnet(blocks=20)",
  (1, 28, 28), 10)``, ``list_models``, ``register_model``, ``residual_info``);
- training (``TrainConfig``, ``train_model``; many models at once: ``train_population``);
- experiments: the honest ``compare``, ``depth_sweep``, ``run_sweep``;
- analysis: ``probe`` (per-layer statistics; ``probe_model`` is the same function), ``audit``,
  ``jacobian_spectrum``, ``layer_symmetry``, ``coverage`` (what a model's own init never writes or writes twice); the maths: ``initlab.theory`` and ``initlab.criticality``;
- the model's graph (``read_graph``) and μP (``mup_parametrize``, ``coord_check``).

Layers and what each may import: docs/architecture.md.
"""
from initlab.version import __version__
from initlab.core import criticality, theory
from initlab.data import DATASETS, DataError, Dataset, load_dataset
from initlab.schemes import (
    Rule,
    SchemeSpec,
    calculate_gain,
    get_scheme,
    initialize,
    initialize_with_report,
    list_schemes,
    parse_scheme,
    parse_scheme_list,
    register_scheme,
    variance_scaling_,
)
from initlab.schemes.materialize import materialize
from initlab.training.mup import MuPPlan, mup_parametrize
from initlab.schemes.sharded import initialize_sharded
from initlab.graph import ModelGraph, read_graph
from initlab.models import ACTIVATIONS, ModelSpec, list_models, make_model, mlp, register_model, residual_info
from initlab.training.loop import TrainConfig, evaluate, train_model
from initlab.training.mlp_engine import Population, train_population
from initlab.analysis.probe import Probe, effective_rank, layer_symmetry, neuron_symmetry, probe, probe_stats
from initlab.analysis.audit import AuditReport, audit
from initlab.analysis.coverage import Coverage, coverage
from initlab.analysis.jacobian import JacobianSpectrum, jacobian_spectrum
from initlab.experiments.compare import CompareResult, CompareSpec, compare, run_compare
from initlab.experiments.depth import DepthSweepResult, depth_sweep
from initlab.experiments.sweeps import RunStore, SweepSpec, load_spec, run_sweep
from initlab.analysis.coordcheck import coord_check
from initlab.report import inline as _inline  # noqa: F401  (results render as their report pages in Jupyter)

probe_model = probe  # the name the README used before ``initlab.probe`` was the function itself

__all__ = [
    # schemes
    "initialize", "initialize_with_report", "list_schemes", "get_scheme", "register_scheme", "parse_scheme",
    "parse_scheme_list", "SchemeSpec", "Rule", "calculate_gain", "variance_scaling_", "mup_parametrize", "MuPPlan",
    "materialize", "initialize_sharded",
    # data and models
    "load_dataset", "Dataset", "DataError", "DATASETS", "mlp", "make_model", "list_models", "register_model",
    "residual_info", "ModelSpec", "ACTIVATIONS", "read_graph", "ModelGraph",
    # training
    "TrainConfig", "train_model", "evaluate", "train_population", "Population",
    # analysis and maths
    "probe", "probe_model", "probe_stats", "Probe", "layer_symmetry", "neuron_symmetry", "effective_rank",
    "audit", "AuditReport", "coverage", "Coverage", "jacobian_spectrum", "JacobianSpectrum", "theory", "criticality",
    # experiments
    "compare", "run_compare", "CompareSpec", "CompareResult", "depth_sweep", "DepthSweepResult",
    "run_sweep", "SweepSpec", "RunStore", "load_spec", "coord_check",
    "__version__",
]
