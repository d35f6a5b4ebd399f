"""How a result object shows itself in Jupyter, without the object's module knowing the report package.

Result classes (``CompareResult``, ``DepthSweepResult``, ``AuditReport``, ``ClaimResults``,
``SweepResult``) define ``_repr_html_`` as ``return display.html_of(self)``; the report package, which
sits above them, registers one renderer per class with :func:`register_html` when it is imported
(``import initlab`` does). Imports keep flowing one way: results -> this registry <- report.
"""
from __future__ import annotations

from typing import Any, Callable

_RENDERERS: dict[type, Callable[[Any], str]] = {}


def register_html(cls: type, render: Callable[[Any], str]) -> None:
    """Render instances of ``cls`` (and its subclasses) in notebooks with ``render(obj) -> HTML``."""
    _RENDERERS[cls] = render


def html_of(obj: Any) -> str | None:
    """The HTML a notebook shows for ``obj``, or None (the notebook then shows the plain-text repr)."""
    for klass in type(obj).__mro__:
        if klass in _RENDERERS:
            return _RENDERERS[klass](obj)
    return None
