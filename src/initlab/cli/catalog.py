"""``initlab schemes`` and ``initlab models``: what initlab knows."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from initlab.cli.common import console
from initlab.models import get_model, list_models
from initlab.models.external import HF_FAMILIES
from initlab.schemes import get_scheme, list_aliases, list_schemes


def schemes():
    """List the init schemes and their aliases."""
    table = Table(title="init schemes")
    table.add_column("name")
    table.add_column("aliases")
    table.add_column("summary")
    aliases = list_aliases()
    for name in list_schemes():
        fn = get_scheme(name)
        doc = (getattr(fn.fn, "__doc__", None) or "").strip().splitlines()
        table.add_row(Text(name), Text(", ".join(sorted(a for a, t in aliases.items() if t == name))),
                      Text(doc[0] if doc else ""))
    console.print(table)


def models():
    """List the model zoo: name, what it is, parameters with defaults, input layout, what --depths varies."""
    table = Table(title="initlab models (use as --model 'name(key=value,...)', or your own 'module:factory')")
    for col in ("model", "input", "depth sweeps", "parameters (defaults)", "what it is"):
        table.add_column(col, overflow="fold")
    for name in list_models():
        e = get_model(name)
        params = ", ".join(f"{k}={v}" for k, v in e.defaults.items())
        table.add_row(Text(name), e.layout, e.depth_param, Text(params), Text(e.summary))
    console.print(table)
    console.print(Text("Library models, built from configs (nothing downloaded): 'timm:NAME' (any timm.list_models() name, "
                       "timm's keyword arguments in parentheses), 'torchvision:NAME', 'hf:FAMILY(config fields)' with "
                       f"FAMILY one of {', '.join(HF_FAMILIES)}; see docs/real-models.md."))
