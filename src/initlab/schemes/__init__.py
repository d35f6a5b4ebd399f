"""Weight-initialization schemes and their application to any network.

Layers, smallest first (one module each):

* :mod:`~initlab.schemes.functions`: tensor functions (``xavier_uniform_``, ``variance_scaling_``,
  ...) that modify their argument in place, torch style, each taking an optional
  ``torch.Generator``; gains and fan conventions;
* :mod:`~initlab.schemes.registry`: names and aliases → schemes with a bias policy, timm style;
* :mod:`~initlab.schemes.specs`: ``SchemeSpec`` / ``parse_scheme`` to name a scheme with
  parameters in configs and on the CLI, and ``parse_scheme_list`` for lists of them;
* :mod:`~initlab.schemes.layers`: per-layer-type handling (which tensors, which blocks, which fans);
* :mod:`~initlab.schemes.parametrized`: effective tensors of weight_norm / spectral_norm /
  parametrized weights and how to write them back;
* :mod:`~initlab.schemes.rules`: rules mapping parameter names, globs and module types to
  schemes, and their precedence;
* :mod:`~initlab.schemes.units`: the tensors ``initialize`` plans (tied tensors once);
* :mod:`~initlab.schemes.apply`: ``initialize`` and ``initialize_with_report``;
* :mod:`~initlab.schemes.variance`: each scheme's E[W²] and the mean-field profile it predicts;
* whole-model schemes, each registered by its own module through the protocol on
  :class:`~initlab.schemes.registry.Scheme`: :mod:`~initlab.schemes.lsuv`, :mod:`~initlab.schemes.auto`,
  :mod:`~initlab.schemes.residual` (fixup, skipinit, rezero, gpt2), :mod:`~initlab.schemes.presets`.
"""

from initlab.schemes.functions import (
    DISTRIBUTIONS,
    MODES,
    NONLINEARITIES,
    TRUNCATED_NORMAL_STD,
    calculate_gain,
    constant_,
    declared_fans,
    fan_in_and_fan_out,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    normal_,
    orthogonal_,
    pytorch_default_,
    trunc_normal_,
    uniform_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)
from initlab.schemes.registry import (
    BIAS_POLICIES,
    Scheme,
    get_scheme,
    list_aliases,
    list_schemes,
    register_scheme,
)
from initlab.schemes.specs import (
    SchemeSpec,
    as_spec,
    check_scheme,
    parse_scheme,
    parse_scheme_list,
    split_top_level,
)
from initlab.schemes.layers import LAYER_TYPES, UNSUPPORTED, Target, handled_types, register_layer
from initlab.schemes.rules import Rule
from initlab.schemes.apply import REPORT_COLUMNS, initialize, initialize_with_report, needs_example
from initlab.schemes.variance import predicted_variances, weight_variance
from initlab.schemes.lsuv import lsuv_  # registers lsuv
from initlab.schemes.auto import auto_initialize  # registers auto
from initlab.schemes.identity import delta_orthogonal_, dirac_, eye_, partial_identity_, zero_hadamard_  # noqa: F401  (registers them)
from initlab.schemes.residual import fixup_rules, gpt2_rules, rezero_rules, skipinit_rules  # noqa: F401  (registers fixup, skipinit, rezero, gpt2)
from initlab.schemes.presets import TIMM_VIT_MODES  # noqa: F401  (registers hf, timm_vit, torchvision_resnet)

__all__ = [
    "BIAS_POLICIES",
    "DISTRIBUTIONS",
    "LAYER_TYPES",
    "MODES",
    "NONLINEARITIES",
    "REPORT_COLUMNS",
    "TRUNCATED_NORMAL_STD",
    "UNSUPPORTED",
    "Rule",
    "Scheme",
    "SchemeSpec",
    "Target",
    "as_spec",
    "auto_initialize",
    "calculate_gain",
    "check_scheme",
    "constant_",
    "declared_fans",
    "fan_in_and_fan_out",
    "get_scheme",
    "handled_types",
    "initialize",
    "initialize_with_report",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "list_aliases",
    "list_schemes",
    "lsuv_",
    "needs_example",
    "normal_",
    "orthogonal_",
    "parse_scheme",
    "parse_scheme_list",
    "predicted_variances",
    "pytorch_default_",
    "register_layer",
    "register_scheme",
    "split_top_level",
    "trunc_normal_",
    "uniform_",
    "variance_scaling_",
    "weight_variance",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]
