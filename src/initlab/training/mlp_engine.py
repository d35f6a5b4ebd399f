"""Population training: K MLPs of one architecture trained as one computation.

A comparison is many small models of the same shape (inits × seeds × learning rates). Trained one at
a time, a 64×784×128 matmul leaves the CPU waiting on Python and small-op overhead; stacked on a
leading model axis, the K models' layers become batched matmuls (``torch.baddbmm``/``bmm``) big
enough to run near the machine's sgemm peak.

The engine reproduces :func:`initlab.training.loop.train_model` run by run, up to float32 summation order:

* initial parameters are copied from models the caller built (``experiment.build_model``), so
  they come from exactly the single loop's init path;
* each model's data order comes from its own ``make_generator(seed, DATA_STREAM, device)``, one
  ``epoch_permutation`` per epoch, split by ``batches`` (last partial batch kept); all models
  share ``n``, so batch sizes line up step by step and ``x_train[idx]`` with ``idx`` of shape
  (K, B) gathers every model's batch at once;
* forward and backward are written out (Linear, activation, mean cross-entropy), which for these
  layers is cheaper than autograd and leaves nothing for it to trace; optimizer updates are
  elementwise with torch's semantics (SGD, SGD+momentum ``v = m·v + g; p -= lr·v``, Adam with
  betas (0.9, 0.999), eps 1e-8 and bias correction), with a per-model learning rate.

A model whose loss becomes NaN/inf is frozen on device (no host sync): from that step its
activations and gradients are zeroed with ``torch.where`` and its learning rate is 0, so its
parameters stay as they were and the others never see it (bmm keeps models independent anyway).
At the end of that epoch it is recorded as diverged, exactly as ``train_model`` records it, and
removed from the population. The end-of-epoch evaluation applies the rest of the divergence rule
(:data:`initlab.training.loop.DIVERGE_LOSS`) as ``train_model`` does: a NaN/inf layer output (named like
the module's ``fc3``/``act3``) or a test loss above the bound removes the model too.

:meth:`BatchedPopulation.epochs` runs the same training one epoch per ``next()``, so a driver can
advance several populations at once: ``train_population(..., workers=N)`` trains each group as N
parts side by side in worker threads (:mod:`initlab.training.workers`), with the same results.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from initlab.data import Dataset
from initlab.models import ACTIVATIONS, activation_fn, mlp
from initlab.training.loop import (
    DATA_STREAM,
    RunResult,
    TrainConfig,
    batches,
    close_epoch,
    close_evaluation,
    epoch_permutation,
    make_generator,
    nonfinite_reason,
)
from initlab.training.workers import part_sizes, train_side_by_side

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of engine state per group (params, optimizer state, activations)
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults
ADAM_EPS = 1e-8

# on_epoch(k, row, get_module): k indexes the models passed in; get_module() materializes model k as
# a plain nn.Module with its parameters at the end of that epoch (only built when called).
PopulationCallback = Callable[[int, dict, Callable[[], nn.Module]], None]
PopulationStepsCallback = Callable[[int, np.ndarray, int], None]  # (k, the epoch's per-step losses, step0)


@dataclass(frozen=True)
class MLPLayout:
    """The architecture of an ``initlab.models.mlp``: layer sizes, activation, whether layers have bias."""

    sizes: tuple[int, ...]  # (in, *hidden, out)
    activation: str  # a key of initlab.models.ACTIVATIONS
    bias: bool = True

    @property
    def num_params(self) -> int:
        return sum(i * o + (o if self.bias else 0) for i, o in zip(self.sizes[:-1], self.sizes[1:]))

    def build(self) -> nn.Sequential:
        """A fresh ``mlp`` of this layout (same parameter names: fc1.weight, fc1.bias, ...)."""
        return mlp(self.sizes[0], self.sizes[1:-1], self.sizes[-1], self.activation, bias=self.bias)


def mlp_layout(model: nn.Module) -> MLPLayout:
    """Read the layout back from an ``mlp``; anything else is a one-line ValueError.

    Args:
        model: an ``nn.Sequential`` of ``fc1, act1, ..., fcL`` as built by ``initlab.models.mlp``.
    """
    names = [n for n, _ in model.named_children()] if isinstance(model, nn.Sequential) else []
    linears = [m for m in model.children() if isinstance(m, nn.Linear)]
    acts = [m for m in model.children() if not isinstance(m, nn.Linear)]
    expected = [f"{p}{i}" for i in range(1, len(linears) + 1) for p in ("fc", "act")][:-1]
    if not linears or names != expected:
        raise ValueError(f"the batched engine trains initlab.models.mlp networks (fc1, act1, ..., fcL); got "
                         f"{type(model).__name__} with children {names}; use engine='single' for other models")
    activation = "linear"
    if acts:
        kinds = {type(a) for a in acts}
        matches = [name for name, (factory, _) in ACTIVATIONS.items()
                   if kinds == {factory} and all(repr(a) == repr(factory()) for a in acts)]
        if not matches:
            raise ValueError(f"unsupported activation module {acts[0]!r} for the batched engine; "
                             f"choose from: {', '.join(ACTIVATIONS)}")
        activation = matches[0]
    has_bias = {m.bias is not None for m in linears}
    if len(has_bias) != 1:
        raise ValueError("the batched engine needs all Linear layers with bias or all without")
    sizes = (linears[0].in_features, *(m.out_features for m in linears))
    if any(a.out_features != b.in_features for a, b in zip(linears[:-1], linears[1:])):
        raise ValueError(f"Linear layers of {type(model).__name__} do not chain: sizes {sizes}")
    return MLPLayout(sizes, activation, has_bias.pop())


def bytes_per_model(layout: MLPLayout, config: TrainConfig, n_train: int) -> int:
    """Engine memory for one model, in bytes (float32): an upper estimate used to size groups.

    params + grads + optimizer state (momentum buffer: 1×, adam: 2×) + kept training activations
    (batch × (in + 2·Σhidden + 3·out), doubled for backward temporaries) + evaluation activations
    (eval chunk × (2·Σhidden + 3·out)) + the int64 epoch permutation (n_train).
    """
    p = layout.num_params
    state = 2 + (2 if config.optimizer == "adam" else (1 if config.momentum > 0 else 0))
    hidden, out = sum(layout.sizes[1:-1]), layout.sizes[-1]
    act = 2 * config.batch_size * (layout.sizes[0] + 2 * hidden + 3 * out)
    ev = config.eval_batch_size * (2 * hidden + 3 * out)
    return 4 * (state * p + act + ev) + 8 * n_train


def default_max_models(layout: MLPLayout, config: TrainConfig, n_train: int,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """How many models fit one group: ``memory_budget // bytes_per_model`` (at least 1)."""
    return max(1, int(memory_budget) // bytes_per_model(layout, config, n_train))


def config_key(config: TrainConfig) -> tuple:
    """What configs of one population share: everything but ``lr`` and ``momentum`` (which may differ
    per model) fixes the shape of the computation."""
    return (config.optimizer, config.batch_size, config.epochs, config.eval_batch_size, config.diverge_loss)


def _act_backward(name: str, g: torch.Tensor, pre: torch.Tensor, out: torch.Tensor,
                  live: torch.Tensor | None) -> torch.Tensor:
    """dL/dpre from dL/dout for the named activation (torch's backward formulas), 0 where not ``live``
    (``live`` None: every model is live, nothing to mask)."""
    if name == "relu":
        # autograd's own ReLU backward kernel instead of where((out > 0) & live, ...): fewer bool
        # temporaries (isolated ~100 vs ~400 µs at K=12, 64×128; within noise end to end)
        g = torch.ops.aten.threshold_backward(g, out, 0)
    else:
        g = _act_grad(name, g, pre, out)
    return g if live is None else torch.where(live, g, 0.0)


def _mask(live: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    """``t`` with the models that are not ``live`` zeroed; ``t`` itself when ``live`` is None."""
    return t if live is None else torch.where(live, t, 0.0)


def masks_needed(alive: torch.Tensor) -> bool:
    """Whether a step must zero frozen models' values (their NaN/inf would reach the weights through
    0·NaN). On a CPU asking costs nothing (no queue to wait for), and while every model is alive
    — nearly always — the step skips its three largest ``torch.where`` passes; the values are
    the same bit for bit (``where`` with an all-true mask copies). On a GPU asking would wait for
    the queue every step, so it always masks."""
    return alive.device.type != "cpu" or not bool(alive.all())


def logsumexp_finite(logits: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(logits, 2, keepdim=True)`` without its guard for infinite maxima, same ops
    otherwise: log(Σ exp(x − m)) + m with m = max. Equal bit for bit wherever the result is finite
    (an infinite or NaN maximum makes it NaN here); the caller recomputes with ``torch.logsumexp``
    when a loss is not finite."""
    m = logits.amax(2, keepdim=True)
    return torch.sub(logits, m).exp_().sum(2, keepdim=True).log_().add_(m)


def _act_grad(name: str, g: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return g * (1 - out * out)
    if name == "sigmoid":
        return g * ((1 - out) * out)
    if name == "linear":
        return g
    with torch.enable_grad():  # the rest (selu, gelu, ...): autograd on one elementwise op is cheap
        z = pre.detach().requires_grad_(True)
        return torch.autograd.grad(activation_fn(name)(z), z, g)[0]


def _layer_name(position: int) -> str:
    """Position 2i is ``fc{i+1}``'s output, 2i+1 ``act{i+1}``'s: the ``mlp`` module names."""
    return f"{'fc' if position % 2 == 0 else 'act'}{position // 2 + 1}"


def _note_nonfinite(first_bad: torch.Tensor, out: torch.Tensor, position: int) -> None:
    """Set ``first_bad[k] = position`` where model k's ``out`` holds NaN/inf and nothing did before."""
    finite = torch.isfinite(out).flatten(1).all(1) if out.dim() > 1 else torch.isfinite(out)
    first_bad.copy_(torch.where((first_bad < 0) & ~finite, position, first_bad))


@dataclass(frozen=True)
class EpochEnd:
    """What one epoch of a population reports: its number, each model's per-step losses
    ``(k, losses, step0)`` and each model's epoch row (``{k: row}``), both in model order; ``k``
    indexes the population's models."""

    epoch: int
    steps: list[tuple[int, np.ndarray, int]]
    rows: dict[int, dict]

    def replay(self, population: BatchedPopulation, *, offset: int = 0, on_epoch: PopulationCallback | None = None,
               on_steps: PopulationStepsCallback | None = None) -> None:
        """Call ``on_steps`` for every model, then ``on_epoch`` for every model (with
        ``get_module`` = ``population.module``), as :meth:`BatchedPopulation.train` does; indices
        are shifted by ``offset`` (a part of a larger population)."""
        if on_steps is not None:
            for k, losses, step0 in self.steps:
                on_steps(offset + k, losses, step0)
        if on_epoch is not None:
            for k, row in self.rows.items():
                on_epoch(offset + k, row, lambda k=k: population.module(k))


class BatchedPopulation:
    """The epoch loop both population engines share; subclasses say how to step and evaluate.

    A subclass sets ``config``, ``seeds``, ``size``, ``device``, ``index`` (positions of the models
    still training), ``momentum`` (per model) and ``_finished`` (tensors of models that left), and
    implements :meth:`_new_state` (optimizer state), :meth:`_step` (one optimizer step of every live
    model on its batch, writing their losses), :meth:`_keep` (drop models from the population),
    :meth:`_evaluate` (per-model test loss, accuracy and non-finite reason) and :meth:`module`.
    Data order, divergence (:func:`initlab.training.loop.close_epoch`, :func:`~initlab.training.loop.close_evaluation`)
    and callbacks are handled here once, exactly as ``train_model`` does them per run.
    """

    # models of the whole population when this one is a part of it trained side by side
    # (initlab.training.workers): an engine whose evaluation chunks depend on the number of models
    # sizes them for the whole, so the parts' memory and chunks are the whole's; None: this population
    eval_models: int | None = None

    @staticmethod
    def _configs(models: Sequence[nn.Module], configs: TrainConfig | Sequence[TrainConfig],
                 seeds: Sequence[int], splitter: str) -> list[TrainConfig]:
        """One config per model, checked: one each, differing only in lr and momentum."""
        if not models:
            raise ValueError("a population needs at least one model")
        configs = [configs] * len(models) if isinstance(configs, TrainConfig) else list(configs)
        if not (len(configs) == len(seeds) == len(models)):
            raise ValueError(f"got {len(models)} models, {len(configs)} configs and {len(seeds)} seeds; give one each")
        if len({config_key(c) for c in configs}) != 1:
            raise ValueError("configs of one population may differ only in lr and momentum; "
                             f"use {splitter} to split the others into groups")
        return configs

    @torch.no_grad()
    def train(self, data: Dataset, *, on_epoch: PopulationCallback | None = None,
              after_epoch: Callable[[int], None] | None = None,
              on_steps: PopulationStepsCallback | None = None) -> list[RunResult]:
        """Train every model for ``config.epochs`` epochs; return one ``RunResult`` per model.

        Each result equals what ``train_model`` returns for that model, seed and config. After each
        epoch ``on_epoch(k, row, get_module)`` is called for every model that ran it (in model
        order), then ``after_epoch(epoch)`` once; ``on_steps(k, losses, step0)`` gets each model's
        per-step losses of the epoch just before its ``on_epoch`` (all models' before the first).
        """
        run = self.epochs(data)
        while True:
            try:
                end = next(run)
            except StopIteration as stop:
                return stop.value
            end.replay(self, on_epoch=on_epoch, on_steps=on_steps)
            if after_epoch is not None:
                after_epoch(end.epoch)

    @torch.no_grad()
    def epochs(self, data: Dataset, cancel: threading.Event | None = None
               ) -> Generator[EpochEnd, None, list[RunResult]]:
        """:meth:`train` one epoch per ``next()``: each yields what that epoch reports (an
        :class:`EpochEnd`: per-step losses and rows of the models that ran it); the generator
        returns the ``RunResult`` list. Between two ``next()`` calls the population is idle, so
        :meth:`module` may be called then (what ``get_module`` does). A driver may advance several
        populations' generators in worker threads (:mod:`initlab.training.workers`). A set
        ``cancel`` stops it before the next step (the generator then returns None).
        """
        if self._finished:
            raise ValueError(f"this population has already trained; build a new {type(self).__name__} to train again")
        cfg, dev = self.config, self.device
        x_train, y_train = data.x_train.to(dev), data.y_train.to(dev)
        x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
        n = x_train.shape[0]
        gens = [make_generator(s, DATA_STREAM, dev) for s in self.seeds]  # as train_model makes them
        results = [RunResult() for _ in range(self.size)]
        chunks: list[list[np.ndarray]] = [[] for _ in range(self.size)]
        state = self._new_state()
        step, step0 = 0, 0
        for epoch in range(1, cfg.epochs + 1):
            if not self.index:
                break
            perms = torch.stack([epoch_permutation(n, gens[k]) for k in self.index])
            idx_batches = batches(perms.T, cfg.batch_size)  # split along the data axis, then (K, B)
            kk = len(self.index)
            losses = torch.empty(kk, len(idx_batches), device=dev)
            alive = torch.ones(kk, dtype=torch.bool, device=dev)
            for i, idx in enumerate(idx_batches):
                if cancel is not None and cancel.is_set():
                    return None
                idx = idx.T.reshape(-1)
                xb = x_train.index_select(0, idx).view(kk, -1, *x_train.shape[1:])
                yb = y_train.index_select(0, idx).view(kk, -1)
                step += 1
                alive = self._step(xb, yb, alive, step, state, losses[:, i])
            losses_np = losses.cpu().double().numpy()
            rows, keep, steps = {}, [], []
            for pos, k in enumerate(self.index):
                chunks[k].append(losses_np[pos])
                rows[k] = close_epoch(results[k], epoch, losses_np[pos], step0)
                steps.append((k, losses_np[pos], step0))
                if not results[k].diverged:
                    keep.append(pos)
            if len(keep) < len(self.index):
                state = self._keep(keep, state)
            if self.index:
                test_loss, test_acc, reasons = self._evaluate(x_test, y_test)
                keep = [pos for pos, k in enumerate(self.index)
                        if close_evaluation(results[k], rows[k], test_loss[pos], test_acc[pos], reasons[pos],
                                            cfg, data.num_classes)]
                if len(keep) < len(self.index):
                    state = self._keep(keep, state)
            for k in sorted(rows):
                results[k].epochs.append(rows[k])
            yield EpochEnd(epoch, steps, {k: rows[k] for k in sorted(rows)})
            step0 += len(idx_batches)
            if epoch == cfg.epochs:
                self._keep([], [])
        for k, res in enumerate(results):
            res.step_losses = np.concatenate(chunks[k]) if chunks[k] else np.zeros(0)
        return results

    def stepper(self, x_train: torch.Tensor, y_train: torch.Tensor) -> Callable[[], None]:
        """A function that takes one optimizer step of every model as :meth:`train` takes it (the
        gather of each model's batch, then the step), on fixed batches: model k's batch is rows
        k·B … k·B+B−1 of ``x_train`` (modulo its length). What :mod:`initlab.training.choice` times;
        it moves this population's parameters, so use it on a population built for the purpose."""
        cfg, dev = self.config, self.device
        x_train, y_train = x_train.to(dev), y_train.to(dev)
        kk, n = len(self.index), x_train.shape[0]
        idx = torch.arange(kk * min(cfg.batch_size, n), device=dev) % n  # no generator: no RNG stream is touched
        state = self._new_state()
        alive = torch.ones(kk, dtype=torch.bool, device=dev)
        losses = torch.empty(kk, device=dev)
        count = [0]

        @torch.no_grad()
        def step() -> None:
            count[0] += 1
            xb = x_train.index_select(0, idx).view(kk, -1, *x_train.shape[1:])
            yb = y_train.index_select(0, idx).view(kk, -1)
            self._step(xb, yb, alive, count[0], state, losses)

        return step


class Population(BatchedPopulation):
    """K MLPs of one layout, parameters stacked on a leading model axis, trained together.

    Weights are (K, out, in) (torch's layout per model), biases (K, out). Use :meth:`train` once;
    :meth:`module` materializes any model as a plain ``nn.Module`` at any time.

    Args:
        models: initialized ``mlp`` networks of one layout (their parameters are copied).
        configs: one ``TrainConfig`` for all, or one per model; they may differ only in ``lr`` and
            ``momentum``.
        seeds: run seed per model; stream DATA_STREAM of it orders that model's data.
        device: where to train; default: the first model's device.
    """

    def __init__(self, models: Sequence[nn.Module], configs: TrainConfig | Sequence[TrainConfig],
                 seeds: Sequence[int], device: str | torch.device | None = None):
        configs = self._configs(models, configs, seeds, "train_population")
        layouts = {mlp_layout(m) for m in models}
        if len(layouts) != 1:
            raise ValueError(f"models of one population must share a layout; got {sorted(map(str, layouts))}")
        self.layout = layouts.pop()
        self.config = configs[0]
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device) if device is not None else next(models[0].parameters()).device
        self.size = len(models)
        dev, f32 = self.device, torch.float32
        with torch.no_grad():
            self.weights, self.biases = [], []
            for layer in range(len(self.layout.sizes) - 1):
                fcs = [getattr(m, f"fc{layer + 1}") for m in models]
                self.weights.append(torch.stack([fc.weight.detach().to(dev, f32) for fc in fcs]).contiguous())
                self.biases.append(torch.stack([fc.bias.detach().to(dev, f32) for fc in fcs]).contiguous()
                                   if self.layout.bias else None)
        self.lr = torch.tensor([c.lr for c in configs], dtype=torch.float64, device=dev)
        self.momentum = torch.tensor([c.momentum for c in configs], dtype=f32, device=dev)
        self.index = list(range(self.size))  # position -> model index (changes as models finish)
        self._finished: dict[int, list[torch.Tensor]] = {}  # params of models no longer in the population
        self._cache: dict[str, torch.Tensor] = {}  # per-step constants of the current population (see _keep)

    # ------------------------------------------------------------------ parameters

    def _params(self) -> list[torch.Tensor]:
        out = []
        for w, b in zip(self.weights, self.biases):
            out += [w] if b is None else [w, b]
        return out

    def module(self, k: int) -> nn.Sequential:
        """Model ``k`` (index into the models given) as a fresh ``mlp`` on the engine's device."""
        if not 0 <= k < self.size:
            raise ValueError(f"model index {k} out of range; choose from 0..{self.size - 1}")
        params = self._finished[k] if k in self._finished else [p[self.index.index(k)] for p in self._params()]
        model = self.layout.build().to(self.device)
        with torch.no_grad():
            for dst, src in zip(model.parameters(), params):
                dst.copy_(src)
        return model

    def _keep(self, positions: list[int], state: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        """Drop every model not at ``positions`` from the stacked tensors (and from ``state``)."""
        gone = [p for p in range(len(self.index)) if p not in positions]
        for p in gone:
            self._finished[self.index[p]] = [t[p].clone() for t in self._params()]
        sel = torch.tensor(positions, dtype=torch.long, device=self.device)
        pick = lambda t: None if t is None else t.index_select(0, sel)  # noqa: E731
        self.weights = [pick(w) for w in self.weights]
        self.biases = [pick(b) for b in self.biases]
        self.lr, self.momentum = pick(self.lr), pick(self.momentum)
        self.index = [self.index[p] for p in positions]
        self._cache.clear()
        return [[pick(t) for t in ts] for ts in state]

    # ------------------------------------------------------------------ math

    def _forward(self, x: torch.Tensor, first_bad: torch.Tensor | None = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Inputs of every layer, hidden pre-activations, and logits.

        ``x`` is (K, B, in), one batch per model, or (B, in), one batch shared by all models (then
        the first layer is a single matmul against all K weight matrices side by side).
        ``first_bad`` (K,) int64, -1 = all finite so far: set in place to the position (see
        :func:`_layer_name`) of each model's first layer output holding NaN/inf.
        """
        act = activation_fn(self.layout.activation)
        inputs, pres, h = [], [], x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            inputs.append(h)
            if h.dim() == 2:  # shared input: (B, in) @ (in, K·out) -> (K, B, out)
                k, n_out = w.shape[0], w.shape[1]
                z = (h @ w.reshape(k * n_out, -1).T).view(h.shape[0], k, n_out).transpose(0, 1)
                z = z if b is None else z + b.unsqueeze(1)
            else:
                z = torch.bmm(h, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if first_bad is not None:
                _note_nonfinite(first_bad, z, 2 * i)
            if i == last:
                return inputs, pres, z
            pres.append(z)
            # ReLU in place: its backward needs only the output (out > 0 exactly where pre > 0),
            # and writing into z saves allocating (and faulting in) a fresh tensor every step
            h = z.clamp_min_(0) if self.layout.activation == "relu" else act(z)
            if first_bad is not None:
                _note_nonfinite(first_bad, h, 2 * i + 1)

    def _step(self, x, y, alive, step, state, losses_out):
        """One optimizer step of every model; writes the step's losses (NaN once frozen) to ``losses_out``.

        On a CPU the step asks (at no cost: no device queue) whether every model is alive and every
        loss finite, and while they are — nearly always — it skips the work that only frozen or
        diverging models need: the ``torch.where`` masks, logsumexp's guard against infinite maxima
        (a finite loss implies finite maxima; on a non-finite loss the step recomputes with
        ``torch.logsumexp`` itself), the per-step ``-lr`` of the live models. Each skipped op is
        the identity on those values, so the numbers are the same bit for bit (tests/test_engine.py).
        """
        inputs, pres, logits = self._forward(x)
        bsz = x.shape[1]
        cpu = alive.device.type == "cpu"
        everyone = cpu and bool(alive.all())  # every model alive before this step (CPU only: no sync on a GPU)
        y3 = y.unsqueeze(2)
        picked = logits.gather(2, y3)
        lse = logsumexp_finite(logits) if cpu else torch.logsumexp(logits, dim=2, keepdim=True)  # (K, B, 1)
        loss = (lse - picked).squeeze(2).mean(1)  # mean cross-entropy per model, (K,)
        # all finite? (a sum is; one reduction instead of isfinite's four ops; a finite sum that
        # overflows only sends the step down the exact, slower path below)
        finite = cpu and math.isfinite(loss.sum().item())
        if cpu and not finite:  # a model diverges at this step: logsumexp's own inf handling decides its loss
            lse = torch.logsumexp(logits, dim=2, keepdim=True)
            loss = (lse - picked).squeeze(2).mean(1)
        if everyone:
            losses_out.copy_(loss)
        else:
            losses_out.copy_(torch.where(alive, loss, math.nan))
        if not (everyone and finite):
            alive = alive & torch.isfinite(loss)
        live = alive.view(-1, 1, 1) if masks_needed(alive) else None
        # dL/dlogits of the mean cross-entropy: (softmax - onehot) / B; zeroed for frozen models
        g = torch.sub(logits, lse).exp_()
        g.scatter_add_(2, y3, self._minus_ones(picked))
        g = _mask(live, g.div_(bsz))
        if not state and self.config.optimizer == "sgd":
            self._sgd_fused(g, inputs, pres, live, alive, everyone and finite)
            return alive
        grads = []
        for i in range(len(self.weights) - 1, -1, -1):
            h = inputs[i] if i == 0 else _mask(live, inputs[i])
            gw = torch.bmm(g.transpose(1, 2), h)
            grads.append((gw, None if self.biases[i] is None else g.sum(1)))
            if i > 0:
                gh = torch.bmm(g, self.weights[i])
                g = _act_backward(self.layout.activation, gh, pres[i - 1], inputs[i], live)
        grads.reverse()
        flat = [t for gw, gb in grads for t in ((gw,) if gb is None else (gw, gb))]
        self._update(flat, alive, step, state)
        return alive

    def _minus_ones(self, like: torch.Tensor) -> torch.Tensor:
        """A (K, B, 1) tensor of -1 (the one-hot's subtraction), kept across steps of one shape."""
        cached = self._cache.get("minus_ones")
        if cached is None or cached.shape != like.shape or cached.device != like.device:
            cached = self._cache["minus_ones"] = torch.full_like(like, -1.0)
        return cached

    def _sgd_fused(self, g, inputs, pres, live, alive, everyone=False):
        """Plain SGD with the update folded into the weight-gradient matmul: W += (-lr·g)ᵀ h.

        Scaling the small (K, B, out) output gradient by each model's -lr and accumulating with
        ``baddbmm_`` into W saves materializing dL/dW and a separate memory-bound pass over every
        weight (both as large as the weights). Each layer's input gradient g·W is taken before its
        W changes. Frozen models have g = 0 and lr = 0, so their weights do not move. ``everyone``:
        every model is live (-lr as it is, kept until the population changes).
        """
        if everyone:
            neg_lr = self._cache.get("neg_lr")
            if neg_lr is None:
                neg_lr = self._cache["neg_lr"] = (-self.lr).float().view(-1, 1, 1)
        else:
            neg_lr = torch.where(alive, -self.lr, 0.0).float().view(-1, 1, 1)
        for i in range(len(self.weights) - 1, -1, -1):
            h = inputs[i] if i == 0 else _mask(live, inputs[i])
            if i > 0:
                gh = torch.bmm(g, self.weights[i])
            gs = g * neg_lr
            if h.dim() == 2:  # one batch shared by all models
                self.weights[i].add_(torch.matmul(gs.transpose(1, 2), h))
            else:
                self.weights[i].baddbmm_(gs.transpose(1, 2), h)
            if self.biases[i] is not None:
                self.biases[i].add_(gs.sum(1))
            if i > 0:
                g = _act_backward(self.layout.activation, gh, pres[i - 1], inputs[i], live)

    def _update(self, grads, alive, step, state):
        """Elementwise optimizer update with per-model lr (0 for frozen models)."""
        lr = torch.where(alive, self.lr, 0.0)
        params = self._params()
        shape = lambda p: (-1,) + (1,) * (p.dim() - 1)  # noqa: E731
        if self.config.optimizer == "adam":
            b1, b2 = ADAM_BETAS
            bc1, bc2_sqrt = 1 - b1 ** step, math.sqrt(1 - b2 ** step)
            neg_step = (-lr / bc1).float()
            for p, g, m, v in zip(params, grads, state[0], state[1]):
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / bc2_sqrt).add_(ADAM_EPS)
                p.add_(torch.div(m, denom).mul_(neg_step.view(shape(p))))
            return
        neg_lr = (-lr).float()
        if state:  # momentum buffers: v = m·v + g (v starts at 0, so step 1 gives v = g as in torch)
            for p, g, v in zip(params, grads, state[0]):
                v.mul_(self.momentum.view(shape(p))).add_(g)
                p.addcmul_(v, neg_lr.view(shape(p)))
        else:
            for p, g in zip(params, grads):
                p.addcmul_(g, neg_lr.view(shape(p)))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192
                 ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Mean cross-entropy and accuracy of every model in the population on ``(x, y)`` (one sync),
        and per model the name of its first layer output holding NaN/inf (None if all finite)."""
        k = len(self.index)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(k, dtype=torch.int64, device=x.device)
        first_bad = torch.full((k,), -1, dtype=torch.int64, device=x.device)
        for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size)):
            _, _, logits = self._forward(xb, first_bad)
            yk = yb.unsqueeze(0).expand(k, -1).unsqueeze(2)
            ce = torch.logsumexp(logits, dim=2, keepdim=True) - logits.gather(2, yk)
            loss_sum += ce.squeeze(2).sum(1).double()
            correct += (logits.argmax(dim=2) == yk.squeeze(2)).sum(1)
        n = y.shape[0]
        bad = [None if j < 0 else _layer_name(j) for j in first_bad.tolist()]
        return loss_sum.cpu().numpy() / n, correct.cpu().numpy() / n, bad

    # ------------------------------------------------------------------ training

    def _new_state(self) -> list[list[torch.Tensor]]:
        params = self._params()
        if self.config.optimizer == "adam":
            return [[torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]]
        if bool((self.momentum > 0).any()):
            return [[torch.zeros_like(p) for p in params]]
        return []

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor):
        test_loss, test_acc, first_bad = self.evaluate(x, y, self.config.eval_batch_size)
        return test_loss, test_acc, [None if b is None else nonfinite_reason(b) for b in first_bad]


def train_population(models: Sequence[nn.Module], data: Dataset, configs: TrainConfig | Sequence[TrainConfig],
                     seeds: Sequence[int], *, on_epoch: PopulationCallback | None = None,
                     after_epoch: Callable[[int], None] | None = None, max_models: int | None = None,
                     memory_budget: int = DEFAULT_MEMORY_BUDGET,
                     on_steps: PopulationStepsCallback | None = None, workers: int = 1) -> list[RunResult]:
    """Train many ``mlp`` models batched; return per model what ``train_model`` returns.

    Models are grouped by layout and by everything in their config except ``lr`` and ``momentum``;
    a group larger than ``max_models`` (default: :func:`default_max_models` under ``memory_budget``)
    is split into consecutive groups run one after another. ``on_epoch(k, row, get_module)`` uses
    ``k`` = index into ``models``; ``after_epoch(epoch)`` follows each epoch of each group.

    Args:
        models: initialized ``mlp`` networks (e.g. from ``experiment.build_model``), on the data's device.
        data: the dataset, preloaded on the device to train on.
        configs: one config for all, or one per model.
        seeds: run seed per model (its data order).
        max_models: largest group trained at once.
        memory_budget: bytes per group, used when ``max_models`` is None.
        workers: train each group as this many parts side by side, one worker thread each with one
            intra-op thread (:mod:`initlab.training.workers`); the same results.
    """
    configs = population_configs(models, configs, seeds, max_models)
    groups: dict[tuple, list[int]] = {}
    for k, (m, c) in enumerate(zip(models, configs)):
        groups.setdefault((mlp_layout(m), config_key(c)), []).append(k)

    def cap(key: tuple, members: list[int]) -> int:
        return max_models or default_max_models(key[0], configs[members[0]], data.x_train.shape[0], memory_budget)

    return train_in_groups(Population, groups, models, configs, seeds, data, cap,
                           on_epoch=on_epoch, after_epoch=after_epoch, on_steps=on_steps, workers=workers)


def population_configs(models: Sequence[nn.Module], configs: TrainConfig | Sequence[TrainConfig],
                       seeds: Sequence[int], max_models: int | None) -> list[TrainConfig]:
    """One config per model (``configs`` may be one for all), after the checks both population engines make."""
    configs = [configs] * len(models) if isinstance(configs, TrainConfig) else list(configs)
    if not (len(configs) == len(seeds) == len(models)):
        raise ValueError(f"got {len(models)} models, {len(configs)} configs and {len(seeds)} seeds; give one each")
    if max_models is not None and (isinstance(max_models, bool) or not isinstance(max_models, int) or max_models <= 0):
        raise ValueError(f"max_models must be a positive integer, got {max_models!r}")
    return configs


def train_in_groups(population: Callable[..., BatchedPopulation], groups: dict[tuple, list[int]],
                    models: Sequence[nn.Module], configs: Sequence[TrainConfig], seeds: Sequence[int], data: Dataset,
                    cap: Callable[[tuple, list[int]], int], *, on_epoch: PopulationCallback | None = None,
                    after_epoch: Callable[[int], None] | None = None,
                    on_steps: PopulationStepsCallback | None = None, workers: int = 1) -> list[RunResult]:
    """Train each group (key -> model indices) in consecutive parts of at most ``cap(key, members)``
    models, one ``population(models, configs, seeds, device)`` per part; callbacks get indices into ``models``.

    ``workers`` > 1: each part is cut into that many contiguous populations (fewer if it has fewer
    models), trained side by side by worker threads with one intra-op thread each
    (:func:`initlab.training.workers.train_side_by_side`): same results, same callback order.
    """
    workers = check_workers(workers)
    results: list[RunResult | None] = [None] * len(models)
    device = data.x_train.device
    for key, members in groups.items():
        size = cap(key, members)
        for start in range(0, len(members), size):
            part = members[start:start + size]
            cb = None if on_epoch is None else (lambda j, row, get, part=part: on_epoch(part[j], row, get))
            sb = None if on_steps is None else (lambda j, losses, step0, part=part: on_steps(part[j], losses, step0))
            pops, at = [], 0
            for n in part_sizes(len(part), workers):
                sub = part[at:at + n]
                pops.append(population([models[k] for k in sub], [configs[k] for k in sub], [seeds[k] for k in sub],
                                       device))
                pops[-1].eval_models = len(part) if workers > 1 else None
                at += n
            if len(pops) == 1:
                trained = pops[0].train(data, on_epoch=cb, after_epoch=after_epoch, on_steps=sb)
            else:
                trained = train_side_by_side(pops, data, on_epoch=cb, after_epoch=after_epoch, on_steps=sb)
            for j, res in enumerate(trained):
                results[part[j]] = res
    return results


def check_workers(workers) -> int:
    """``workers`` as a positive int, or a one-line ValueError."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise ValueError(f"workers must be a positive integer (1: one population, no worker threads), got {workers!r}")
    return int(workers)
