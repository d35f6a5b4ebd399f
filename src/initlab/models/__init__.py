"""Models: initlab's MLPs (:mod:`~initlab.models.mlp`), the zoo (:mod:`~initlab.models.zoo`: ``cnn``,
``resmlp``, ``resnet``, ``transformer``), models by name (:mod:`~initlab.models.registry`) and the
user's own (:mod:`~initlab.models.user`: ``module:factory``, per-run factories, output checks).
"""
from initlab.models.mlp import (
    ACTIVATIONS,
    INT64_MAX,
    MAX_DEPTH,
    MAX_WIDTH,
    activation_fn,
    arch_text,
    check_activation,
    check_widths,
    mlp,
    parse_hidden,
    parse_int_list,
)
from initlab.models.registry import (
    ModelEntry,
    ModelSpec,
    depth_param,
    get_model,
    is_factory_spec,
    list_models,
    make_model,
    model_text,
    parse_model,
    register_model,
    resolve_model,
)
from initlab.models.user import (
    call_factory,
    check_inputs,
    check_model,
    check_output,
    input_shape_of,
    load_factory,
    model_inputs,
    pick_logits,
)
from initlab.models.zoo import CNN, ResMLP, ResNet, Scalar, Transformer
from initlab.schemes.structure import ResidualInfo, residual_info

__all__ = [
    "ACTIVATIONS", "INT64_MAX", "MAX_DEPTH", "MAX_WIDTH", "activation_fn", "arch_text", "check_activation",
    "check_widths", "mlp", "parse_hidden", "parse_int_list", "ModelEntry", "ModelSpec", "depth_param", "get_model",
    "is_factory_spec", "list_models", "make_model", "model_text", "parse_model", "register_model", "resolve_model",
    "call_factory", "check_inputs", "check_model", "check_output", "input_shape_of", "load_factory", "model_inputs", "pick_logits", "CNN",
    "ResidualInfo", "ResMLP", "ResNet", "Scalar", "Transformer", "residual_info",
]
