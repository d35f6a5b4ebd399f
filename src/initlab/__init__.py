"""initlab: a lab for neural-network weight initialization.

Schemes (``initialize`` for any network, by one scheme or rules per name/type; ``initialize_with_report``;
``list_schemes``), data (``load_dataset``), models (``mlp``; the zoo by spec: ``make_model("resnet(blocks=20)",
(1, 28, 28), 10)``, ``list_models``, ``register_model``, ``residual_info``), training
(``TrainConfig``, ``train_model``; many models at once: ``train_population``), honest comparisons (``compare``), diagnostics
(``probe_model``, ``probe_stats``, ``layer_symmetry``), mean-field theory (``initlab.theory``,
``initlab.criticality``), the model's graph (``read_graph``) and ``initlab.audit``.

``initlab.probe`` and ``initlab.audit`` are modules and, being callable, also the functions:
``initlab.probe(model, inputs, targets)`` runs :func:`initlab.probe.probe` (``probe_model`` is an
alias) and ``initlab.audit(model, example)`` runs :func:`initlab.audit.audit`. Binding the
functions themselves to those names would shadow the modules.
"""
import initlab.audit  # noqa: F401  (callable module: initlab.audit(model, example))
from initlab.audit import AuditReport
from initlab.data import DATASETS, Dataset, DataError, load_dataset
from initlab.engine import Population, train_population
from initlab.experiment import CompareResult, CompareSpec, compare, run_compare
from initlab.models import ACTIVATIONS, ModelSpec, list_models, make_model, mlp, register_model, residual_info
from initlab.probe import Probe, effective_rank, layer_symmetry, neuron_symmetry, probe_stats
from initlab.probe import probe as probe_model
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
from initlab.graph import ModelGraph, read_graph
from initlab.jacobian import JacobianSpectrum, jacobian_spectrum
from initlab.mup import MuPPlan, coord_check, mup_parametrize
from initlab.sweep import DepthSweepResult, depth_sweep
from initlab.sweeps import RunStore, SweepSpec, load_spec, run_sweep
from initlab.train import TrainConfig, evaluate, train_model

__version__ = "0.1.0"
