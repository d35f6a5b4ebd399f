"""``initlab schemes`` and ``initlab models``: what initlab knows."""
from __future__ import annotations

from initlab.cli.common import say, show
from initlab.models import get_model, list_models
from initlab.models.external import HF_FAMILIES
from initlab.report.tables import model_list, scheme_list
from initlab.schemes import get_scheme, list_aliases, list_schemes


def schemes():
    """List the init schemes and their aliases."""
    show(scheme_list({name: get_scheme(name) for name in list_schemes()}, list_aliases()))


def models():
    """List the model zoo: name, what it is, parameters with defaults, input layout, what --depths varies."""
    show(model_list({name: get_model(name) for name in list_models()}))
    say("Library models, built from configs (nothing downloaded): 'timm:NAME' (any timm.list_models() name, timm's "
        "keyword arguments in parentheses), 'torchvision:NAME', 'hf:FAMILY(config fields)' with FAMILY one of "
        f"{', '.join(HF_FAMILIES)}; see docs/real-models.md.")
