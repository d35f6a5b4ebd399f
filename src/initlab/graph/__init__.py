"""Read a model's own graph: the nonlinearity each weight layer feeds, its residual and concat role.

``read_graph(model, example)`` is what ``initialize(model, "auto", example=batch)`` reads: for
every weight layer (Linear, Conv/ConvTranspose 1-3d, Bilinear, Embedding, MultiheadAttention's
projections, RNN/LSTM/GRU) the elementwise activation its output feeds, looking through norms,
pooling, dropout, reshapes and identities; whether it is the classifier; which residual stream
its branch adds into and whether it is the last layer of that branch; which concatenation takes
its output and with what share of the channels.

How: ``torch.fx`` tracing with concrete values. ``_ConcreteTracer`` runs every op on the example
as it records it, so control flow on *metadata* (``x.dim() == 3``, ``len(x.size())``,
``x.is_nested``; ``nn.TransformerEncoder`` has all three) follows the example's shapes, while
control flow on *data* (``if x.sum() > 0``) still stops the trace. The model is then read from
forward hooks instead (``method="hooks"``): the order of module calls on the example, each weight
layer feeding the next activation module called before the next weight layer; residuals,
concatenations and functional activations (``F.relu`` in ``forward``) are not seen there.

An op the reader does not know is tested numerically: it is elementwise when f(x)[perm] =
f(x[perm]) for a random permutation of the flattened elements, redrawing half the elements leaves
the other half's outputs alone, it works on a flat tensor, and its outputs are finite and
deterministic. Such an op (or a run of them, such as ``x * torch.sigmoid(x)``) is returned as a
callable that the theory module can integrate by quadrature. Softmax and attention fail the test
and are reported as ``feeds="non-elementwise"``.

The model is left as it was: train/eval flags, buffers (BatchNorm running statistics) and the
global RNG are restored, attributes the tracer adds are removed, hooks are removed on error too.
Lazy modules are materialized by the example, as by any first forward pass.
"""
from __future__ import annotations

from initlab.graph.ops import WEIGHT_TYPES, LayerInfo, ModelGraph, is_elementwise
from initlab.graph.read import preserved, read_graph, split_example

__all__ = ["LayerInfo", "ModelGraph", "read_graph", "WEIGHT_TYPES", "is_elementwise", "preserved", "split_example"]
