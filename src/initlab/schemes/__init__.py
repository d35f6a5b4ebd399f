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
* :mod:`~initlab.schemes.apply`: ``initialize`` and ``initialize_with_report``.

Everything the former single ``initlab.schemes`` module defined is importable from here.
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
    check_scheme,
    parse_scheme,
    parse_scheme_list,
    split_top_level,
)
from initlab.schemes.layers import LAYER_TYPES, UNSUPPORTED, Target, handled_types, register_layer
from initlab.schemes.rules import Rule
from initlab.schemes.apply import REPORT_COLUMNS, initialize, initialize_with_report, needs_example
from initlab.schemes.lsuv import lsuv_
from initlab.schemes import auto as _auto  # noqa: F401  (registers auto's whole-model initializer)
from initlab.schemes.identity import delta_orthogonal_, dirac_, eye_, partial_identity_, zero_hadamard_  # noqa: F401  (registers them)
from initlab.schemes.residual import fixup_rules, gpt2_rules, rezero_rules, skipinit_rules  # noqa: F401  (registers fixup, skipinit, rezero, gpt2)
from initlab.schemes.presets import TIMM_VIT_MODES  # noqa: F401  (registers hf, timm_vit, torchvision_resnet)

# Private names of the former single module, still read by initlab.core.theory (as_spec) and the tests
# (_SCHEMES, _ALIASES: the registry's own dicts, so changes through either name are shared).
from initlab.schemes.functions import _LINEAR_GAIN_NAMES, _check_choice, _check_number, _fan, _kaiming_std  # noqa: F401
from initlab.schemes.registry import _ALIASES, _SCHEMES, _init_bias  # noqa: F401
from initlab.schemes.specs import (  # noqa: F401
    _ARG_RE,
    _SPEC_RE,
    as_spec,
    _canonical,
    _format_value,
    _parse_value,
    _plain_params,
)

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
    "pytorch_default_",
    "register_layer",
    "register_scheme",
    "split_top_level",
    "trunc_normal_",
    "uniform_",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]
