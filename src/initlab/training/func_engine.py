"""Population training for any ``nn.Module``: K copies of one architecture trained with ``torch.func``.

:mod:`initlab.training.mlp_engine` writes the forward and backward of an MLP by hand; this engine gets the same
batching for arbitrary architectures (CNNs, residual blocks, attention) from function transforms:

* the K models' parameters and buffers are stacked on a leading model axis
  (``torch.func.stack_module_state``) and a template (a deep copy of the first model) is run with
  each model's tensors by ``torch.func.functional_call``;
* one training step is ``vmap(grad_and_value(loss))`` over (params, buffers, x, y): vmap turns the
  K Linear layers into one batched matmul and the K convolutions into one grouped convolution
  (groups = K), so a small CNN's step is a few large kernels instead of K×layers small ones;
* the loss is the mean cross-entropy of the template's output (logits, (B, C)), as in
  :func:`initlab.training.loop.train_model`; the optimizer updates are elementwise with torch.optim's
  formulas (SGD, SGD+momentum ``v = m·v + g; p -= lr·v``, Adam with betas (0.9, 0.999), eps 1e-8 and
  bias correction), with a per-model learning rate and momentum.

It reproduces ``train_model`` run by run, up to float32 summation order: initial parameters and
buffers are copied from the models given; model k's data order comes from its own
``make_generator(seed, DATA_STREAM, device)`` (one ``epoch_permutation`` per epoch, split by
``batches``), and a step gathers every model's batch at once as
``x_train.index_select(0, idx).view(K, B, *x_train.shape[1:])``; the template is in train mode for
the steps and in eval mode for the end-of-epoch evaluation, as ``train_model`` and ``evaluate``
switch it.

BatchNorm: running statistics are buffers, stacked like the parameters and passed to
``functional_call`` batched (in_dims 0). In train mode ``F.batch_norm`` updates
``running_mean``/``running_var`` in place, and vmap's batch-norm rule writes each model's statistics
(from its own batch) into its own row of the stacked buffer; BatchNorm's Python-side
``num_batches_tracked.add_(1)`` is an in-place add on the batched buffer, also per model. This was
checked against the single loop (tests: a CNN with BatchNorm2d ends with equal running_mean/var and
num_batches_tracked), so no functional re-implementation is needed. The exception is
``momentum=None`` (cumulative average): BatchNorm then turns ``num_batches_tracked`` into a Python
float, which vmap cannot do; :func:`vmap_problem` reports it and the caller uses the single loop.

Divergence, as in :mod:`initlab.training.mlp_engine`: a model whose step loss is NaN/inf is frozen on device (no
host sync per step): its gradients are zeroed, its learning rate is 0 and its buffers are restored,
all with ``torch.where``. At the end of that epoch it is recorded as ``train_model`` records it
(epoch, step, reason) and dropped. The end-of-epoch test evaluation is vmapped over models in chunks
of ``config.eval_batch_size`` examples shared by all models; it gives per-model loss and accuracy,
and with forward hooks on the template's leaf modules it notes per model whether any layer output
held NaN/inf. Only for such a model (rare) is it materialized with :meth:`FuncPopulation.module`
and evaluated again under :class:`initlab.training.loop.NonFiniteWatch`, so the reason names the same
first module as ``train_model``'s. A test loss above ``config.loss_bound(C)`` removes a model too.

Not every model can be vmapped: random ops in train mode (Dropout with p > 0: vmap cannot reproduce
the single loop's RNG anyway), ``.item()`` or Python control flow on tensor values in ``forward``,
in-place writes of batched values into unbatched tensors. :func:`vmap_problem` finds these with a
trial step on a tiny batch and returns a one-line reason; :func:`train_func_population` raises it
as a ValueError so the caller can fall back to ``train_model``.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from initlab.data import Dataset
from initlab.training.loop import (
    NonFiniteWatch,
    RunResult,
    TrainConfig,
    evaluate,
    nonfinite_reason,
)
from initlab.training.mlp_engine import (
    BatchedPopulation,
    PopulationCallback,
    PopulationStepsCallback,
    config_key,
    population_configs,
    train_in_groups,
)

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of engine state per group (params, optimizer state, activations)
# Evaluation runs all K models on one chunk of test examples at once; the chunk shrinks below
# config.eval_batch_size so that K × chunk × (largest layer output) stays within this many bytes
# (a 16-channel 28×28 conv output is 50 KB per example: 12 models × 8192 examples would be 5 GB).
EVAL_BYTES = 256 << 20
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults
ADAM_EPS = 1e-8


# ---------------------------------------------------------------------- architecture and checks

def architecture_key(model: nn.Module) -> tuple:
    """What must agree for models to share one template: class, repr (layer hyperparameters,
    activations) and the names, shapes and dtypes of parameters and buffers."""
    tensors = tuple((kind, name, tuple(t.shape), t.dtype, t.requires_grad if kind == "p" else False)
                    for kind, named in (("p", model.named_parameters()), ("b", model.named_buffers()))
                    for name, t in named)
    return type(model).__qualname__, repr(model), tensors



def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _explain(e: BaseException) -> str:
    """A one-line reason for a failed vmap trial, naming the usual culprits."""
    msg = _first_line(e)
    if "random operation" in msg:
        return ("the model draws random numbers in train mode (e.g. Dropout with p > 0); vmap cannot "
                "reproduce the single loop's random stream; use the single loop")
    if "item()" in msg or "data-dependent control flow" in msg:
        return ("the model's forward reads tensor values on the host (.item(), Python control flow on a "
                "tensor, or BatchNorm with momentum=None); vmap cannot batch it; use the single loop")
    if "in-place" in msg.lower() or "inplace" in msg.lower():
        return f"the model writes batched values in place into an unbatched tensor, which vmap rejects ({msg[:160]})"
    return f"vmap cannot batch this model: {type(e).__name__}: {msg[:200]}"


def _loss_fn(template: nn.Module):
    def loss(params, buffers, x, y):
        return nn.functional.cross_entropy(functional_call(template, (params, buffers), (x,)), y)
    return loss


def vmap_problem(model: nn.Module, example_x: torch.Tensor, example_y: torch.Tensor) -> str | None:
    """Why ``model`` cannot be trained by this engine, in one line, or None if it can.

    Runs what training runs, on two copies of ``model`` (the model itself is not touched): a
    train-mode ``vmap(grad_and_value(cross_entropy ∘ functional_call))`` step with random ops
    forbidden, then an eval-mode forward vmapped over models with the batch shared. Cheap: use a
    tiny batch (2-4 examples; BatchNorm needs more than one value per channel).

    Args:
        model: a model as it would be passed to :func:`train_func_population`.
        example_x: a few training inputs, (b, *input_shape).
        example_y: their labels, (b,) int64.
    """
    template = copy.deepcopy(model)
    try:
        params, buffers = stack_module_state([template, copy.deepcopy(model)])
        params = {n: p.detach() for n, p in params.items()}
        template.train()
        xs, ys = torch.stack([example_x, example_x]), torch.stack([example_y, example_y])
        grads, loss = vmap(grad_and_value(_loss_fn(template)), randomness="error")(params, buffers, xs, ys)
        if loss.shape != (2,):
            return f"the model's output is not (batch, classes) logits: cross-entropy gave shape {tuple(loss.shape)}"
        template.eval()
        with torch.no_grad():
            vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), in_dims=(0, 0, None),
                 randomness="error")(params, buffers, example_x)
    except Exception as e:  # noqa: BLE001 - any failure is the reason, reported as one line
        return _explain(e)
    return None


# ---------------------------------------------------------------------- memory

def _activation_numels(model: nn.Module, example_x: torch.Tensor) -> tuple[float, float]:
    """Per example: the summed numel of every leaf module's output, and the largest one."""
    sizes = []
    probe = copy.deepcopy(model)
    handles = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() if isinstance(o, torch.Tensor) else 0))
               for m in probe.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            probe.eval()(example_x)
    finally:
        for h in handles:
            h.remove()
    b = max(1, example_x.shape[0])
    return sum(sizes) / b, max(sizes, default=0) / b


def bytes_per_model_func(model: nn.Module, config: TrainConfig, example_x: torch.Tensor, n_train: int = 0) -> int:
    """Engine memory for one model, in bytes (float32): an upper estimate used to size groups.

    params × (1 + grad + optimizer state: momentum 1×, adam 2×) + buffers × 2 (a copy restores
    frozen models) + training activations (batch × Σ leaf outputs per example, doubled for backward
    temporaries, plus the batch itself) + evaluation activations (eval chunk × 2 × the largest
    leaf output: no graph is kept) + the int64 epoch permutation (``n_train``). Leaf outputs are
    measured by a forward with hooks on ``example_x`` (a few examples) and scaled per example.
    """
    p = sum(t.numel() for t in model.parameters())
    buf = sum(t.numel() for t in model.buffers())
    state = 2 + (2 if config.optimizer == "adam" else (1 if config.momentum > 0 else 0))
    total, largest = _activation_numels(model, example_x)
    per_x = example_x[0].numel()
    act = config.batch_size * (2 * total + per_x)
    ev = min(config.eval_batch_size * (2 * largest + per_x), EVAL_BYTES // 4)  # the chunk adapts (EVAL_BYTES)
    return int(4 * (state * p + 2 * buf + act + ev) + 8 * n_train)


def default_max_models(model: nn.Module, config: TrainConfig, example_x: torch.Tensor, n_train: int = 0,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """How many models fit one group: ``memory_budget // bytes_per_model_func`` (at least 1)."""
    return max(1, int(memory_budget) // bytes_per_model_func(model, config, example_x, n_train))


# ---------------------------------------------------------------------- the population

class FuncPopulation(BatchedPopulation):
    """K models of one architecture, parameters and buffers stacked on a leading model axis.

    Use :meth:`train` once; :meth:`module` materializes any model as a plain ``nn.Module`` (a deep
    copy of the template with that model's parameters and buffers) at any time.

    Args:
        models: initialized models of one architecture (see :func:`architecture_key`); their
            parameters and buffers are copied, the models are not modified.
        configs: one ``TrainConfig`` for all, or one per model; they may differ only in ``lr`` and
            ``momentum``.
        seeds: run seed per model; stream DATA_STREAM of it orders that model's data.
        device: where to train; default: the first model's device.
    """

    def __init__(self, models: Sequence[nn.Module], configs: TrainConfig | Sequence[TrainConfig],
                 seeds: Sequence[int], device: str | torch.device | None = None):
        configs = self._configs(models, configs, seeds, "train_func_population")
        key = architecture_key(models[0])
        for k, m in enumerate(models[1:], 1):
            if architecture_key(m) != key:
                raise ValueError(f"models of one population must share one architecture (class, layers, parameter "
                                 f"and buffer names/shapes); model {k} ({type(m).__name__}) differs from model 0")
        self.config = configs[0]
        self.seeds = [int(s) for s in seeds]
        first = next(iter(models[0].parameters()), None)
        self.device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
        self.size = len(models)
        self.template = copy.deepcopy(models[0]).to(self.device).train()  # evaluate() switches to eval and back
        with torch.no_grad():
            params, buffers = stack_module_state(list(models))
            trainable = {n for n, p in models[0].named_parameters() if p.requires_grad}
            self.params = {n: p.detach().to(self.device).clone() for n, p in params.items() if n in trainable}
            # parameters that do not train are constants, passed like buffers but never written
            self.buffers = {n: p.detach().to(self.device).clone() for n, p in params.items() if n not in trainable}
            self.buffers.update({n: b.to(self.device).clone() for n, b in buffers.items()})
        self.lr = torch.tensor([c.lr for c in configs], dtype=torch.float64, device=self.device)
        self.momentum = torch.tensor([c.momentum for c in configs], dtype=torch.float32, device=self.device)
        self.index = list(range(self.size))  # position -> model index (changes as models finish)
        self._finished: dict[int, dict[str, torch.Tensor]] = {}  # tensors of models no longer trained

    # ------------------------------------------------------------------ tensors

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**self.params, **self.buffers}

    def module(self, k: int) -> nn.Module:
        """Model ``k`` (index into the models given) as a plain ``nn.Module`` in train mode."""
        if not 0 <= k < self.size:
            raise ValueError(f"model index {k} out of range; choose from 0..{self.size - 1}")
        tensors = self._finished[k] if k in self._finished else \
            {n: t[self.index.index(k)] for n, t in self._tensors().items()}
        model = copy.deepcopy(self.template).train()
        with torch.no_grad():
            for name, t in tensors.items():
                try:
                    model.get_parameter(name).copy_(t)
                except AttributeError:
                    model.get_buffer(name).copy_(t)
        return model

    def _keep(self, positions: list[int], state: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Drop every model not at ``positions`` from the stacked tensors (and from ``state``)."""
        for p in range(len(self.index)):
            if p not in positions:
                self._finished[self.index[p]] = {n: t[p].clone() for n, t in self._tensors().items()}
        sel = torch.tensor(positions, dtype=torch.long, device=self.device)
        pick = lambda d: {n: t.index_select(0, sel) for n, t in d.items()}  # noqa: E731
        self.params, self.buffers = pick(self.params), pick(self.buffers)
        self.lr, self.momentum = self.lr.index_select(0, sel), self.momentum.index_select(0, sel)
        self.index = [self.index[p] for p in positions]
        return [pick(s) for s in state]

    # ------------------------------------------------------------------ math

    def _step(self, x, y, alive, step, state, losses_out):
        """One optimizer step of every model; writes the step's losses (NaN once frozen) to ``losses_out``."""
        old = {n: b.clone() for n, b in self.buffers.items()}  # BatchNorm updates buffers in place
        grads, loss = vmap(grad_and_value(_loss_fn(self.template)), randomness="error")(
            self.params, self.buffers, x, y)
        losses_out.copy_(torch.where(alive, loss, math.nan))
        alive = alive & torch.isfinite(loss)
        shape = lambda t: (-1,) + (1,) * (t.dim() - 1)  # noqa: E731
        for n, b in self.buffers.items():
            b.copy_(torch.where(alive.view(shape(b)), b, old[n]))
        grads = {n: torch.where(alive.view(shape(g)), g, 0.0) for n, g in grads.items()}
        self._update(grads, alive, step, state)
        return alive

    def _update(self, grads, alive, step, state):
        """Elementwise optimizer update with per-model lr (0 for frozen models): torch.optim's formulas."""
        lr = torch.where(alive, self.lr, 0.0)
        shape = lambda p: (-1,) + (1,) * (p.dim() - 1)  # noqa: E731
        if self.config.optimizer == "adam":
            b1, b2 = ADAM_BETAS
            bc1, bc2_sqrt = 1 - b1 ** step, math.sqrt(1 - b2 ** step)
            neg_step = (-lr / bc1).float()
            for n, p in self.params.items():
                g, m, v = grads[n], state[0][n], state[1][n]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / bc2_sqrt).add_(ADAM_EPS)
                p.add_(torch.div(m, denom).mul_(neg_step.view(shape(p))))
            return
        neg_lr = (-lr).float()
        for n, p in self.params.items():
            g = grads[n]
            if state:  # momentum buffers: v = m·v + g (v starts at 0, so step 1 gives v = g as in torch)
                g = state[0][n].mul_(self.momentum.view(shape(p))).add_(g)
            p.addcmul_(g, neg_lr.view(shape(p)))

    @torch.no_grad()
    def _eval_chunk(self, x: torch.Tensor) -> int:
        """``config.eval_batch_size``, or fewer examples so the live models' evaluation fits EVAL_BYTES
        (``eval_models``: the models of the whole population this one is a part of, if set)."""
        if not hasattr(self, "_largest"):
            _, self._largest = _activation_numels(self.module(self.index[0]), x[:2])
        # a part of a population split across workers sizes its chunks for the whole (eval_models): the
        # parts evaluate at the same time, and their chunks are then those of the whole population
        per = 4 * (self.eval_models or len(self.index)) * (2 * self._largest + x[0].numel())
        return int(max(1, min(self.config.eval_batch_size, EVAL_BYTES // max(1, per))))

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean cross-entropy and accuracy of every model in the population on ``(x, y)`` (eval mode,
        one sync), and per model whether any leaf module's output or its logits held NaN/inf."""
        template = self.template.eval()
        flags: list[torch.Tensor] = []

        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                flags.append(torch.isfinite(output).all())

        def one(params, buffers, xb, yb):
            flags.clear()
            logits = functional_call(template, (params, buffers), (xb,))
            flags.append(torch.isfinite(logits).all())
            loss = nn.functional.cross_entropy(logits, yb, reduction="sum")
            correct = (logits.argmax(dim=1) == yb).sum()
            return loss, correct, torch.stack(flags).all()

        handles = [m.register_forward_hook(hook) for m in template.modules() if not any(True for _ in m.children())]
        k = len(self.index)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(k, dtype=torch.int64, device=x.device)
        finite = torch.ones(k, dtype=torch.bool, device=x.device)
        try:
            batched = vmap(one, in_dims=(0, 0, None, None), randomness="error")
            for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size)):
                ls, c, f = batched(self.params, self.buffers, xb, yb)
                loss_sum += ls.double()
                correct += c
                finite &= f
        finally:
            for h in handles:
                h.remove()
            template.train()
        n = y.shape[0]
        return loss_sum.cpu().numpy() / n, correct.cpu().numpy() / n, ~finite.cpu().numpy()

    # ------------------------------------------------------------------ training

    def _new_state(self) -> list[dict[str, torch.Tensor]]:
        def zeros():
            return {n: torch.zeros_like(p) for n, p in self.params.items()}

        if self.config.optimizer == "adam":
            return [zeros(), zeros()]
        if bool((self.momentum > 0).any()):
            return [zeros()]
        return []

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor):
        test_loss, test_acc, nonfinite = self.evaluate(x, y, self._eval_chunk(x))
        return test_loss, test_acc, [self._nonfinite_reason(k, x, y) if bad else None
                                     for k, bad in zip(self.index, nonfinite)]

    def _nonfinite_reason(self, k: int, x: torch.Tensor, y: torch.Tensor) -> str | None:
        """The rare path: model ``k`` had a NaN/inf layer output; name its first module exactly as
        ``train_model`` does, by evaluating the materialized model under ``NonFiniteWatch``."""
        model = self.module(k)
        with NonFiniteWatch(model) as watch:
            evaluate(model, x, y, self.config.eval_batch_size)
        return None if watch.first is None else nonfinite_reason(watch.first)


def train_func_population(models: Sequence[nn.Module], data: Dataset, configs: TrainConfig | Sequence[TrainConfig],
                          seeds: Sequence[int], *, on_epoch: PopulationCallback | None = None,
                          after_epoch: Callable[[int], None] | None = None, max_models: int | None = None,
                          on_steps: PopulationStepsCallback | None = None,
                          memory_budget: int = DEFAULT_MEMORY_BUDGET, workers: int = 1) -> list[RunResult]:
    """Train many models of any vmappable architecture batched; return per model what ``train_model`` returns.

    Models are grouped by :func:`architecture_key` and by everything in their config except ``lr``
    and ``momentum``; a group larger than ``max_models`` (default: :func:`default_max_models` under
    ``memory_budget``) is split into consecutive groups run one after another. Each group is first
    checked with :func:`vmap_problem` on two training examples; a model that cannot be vmapped is a
    ValueError carrying that one-line reason (train it with ``train_model`` instead).
    ``on_epoch(k, row, get_module)`` uses ``k`` = index into ``models``; ``after_epoch(epoch)``
    follows each epoch of each group.

    Args:
        models: initialized models, on the data's device.
        data: the dataset, preloaded on the device to train on; inputs of any trailing shape.
        configs: one config for all, or one per model.
        seeds: run seed per model (its data order).
        max_models: largest group trained at once.
        memory_budget: bytes per group, used when ``max_models`` is None.
        workers: train each group as this many parts side by side, one worker thread each with one
            intra-op thread (:mod:`initlab.training.workers`); the same results. Each part sizes its
            evaluation chunks for its own models (:data:`EVAL_BYTES` each).
    """
    configs = population_configs(models, configs, seeds, max_models)
    groups: dict[tuple, list[int]] = {}
    for k, (m, c) in enumerate(zip(models, configs)):
        groups.setdefault((architecture_key(m), config_key(c)), []).append(k)
    ex_x, ex_y = data.x_train[:2], data.y_train[:2]
    for members in groups.values():
        problem = vmap_problem(models[members[0]], ex_x, ex_y)
        if problem is not None:
            raise ValueError(f"model {members[0]} ({type(models[members[0]]).__name__}): {problem}")
    def cap(key: tuple, members: list[int]) -> int:
        return max_models or default_max_models(models[members[0]], configs[members[0]], ex_x, data.x_train.shape[0],
                                                memory_budget)

    return train_in_groups(FuncPopulation, groups, models, configs, seeds, data, cap,
                           on_epoch=on_epoch, after_epoch=after_epoch, on_steps=on_steps, workers=workers)
