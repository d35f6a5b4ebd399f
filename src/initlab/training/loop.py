"""Training one model on preloaded tensors: the honest version of the seed notebook's loop.

Every run gets a model that was freshly built and initialized for it, and its seed fixes both its
initial weights and its data order through two independent streams (:func:`derive_seed`). Runs with
the same seed and different init schemes therefore see the same batches in the same order, which
makes init comparisons paired: the only difference between them is the initialization.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab.core.checks import is_integer, is_real
from initlab.data import Dataset

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")

# Stream ids for derive_seed: one seed feeds independent generators for init and data order.
INIT_STREAM = 0
DATA_STREAM = 1
PROBE_STREAM = 2  # with seed 0: the fixed probe batch shared by every run of a comparison

MAX_INT = (1 << 63) - 1  # counts beyond int64 overflow torch's indexing; refuse them up front

# The divergence rule (README "Divergence"). A run diverges when (1) a training step's loss is
# NaN/inf, (2) an activation is NaN/inf at init or in the end-of-epoch evaluation, or (3) its
# end-of-epoch test loss exceeds DIVERGE_LOSS·ln(C), C the number of classes (ln C is the loss of
# the uniform prediction). Measured on digits (64-128-10 and 64-128-128-10 ReLU MLPs, SGD, 5 epochs): inits that
# start far above chance and then train (normal(std=2), 2 hidden layers: step loss 4.4e3 at init,
# 0.90 accuracy) end epochs at test losses <= 140 ≈ 61·ln 10, while lr 1e6 sits at 2.8e5-6.8e5 ≈
# 1e5·ln 10 at chance accuracy. 1000 separates the two by more than an order of magnitude each way.
# Step losses are not bounded: a large init's first steps legitimately exceed any such bound.
DIVERGE_LOSS = 1000.0


def derive_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for ``stream`` of run ``seed`` (numpy SeedSequence: streams are independent)."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def make_generator(seed: int, stream: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``stream`` of run ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream))
    return g


def device_text(device: str | torch.device) -> str:
    """A device as the text initlab records: a ``torch.device`` becomes ``"cpu"`` / ``"cuda"`` / ``"cuda:1"``."""
    return str(device) if isinstance(device, torch.device) else device


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is an error."""
    device = device_text(device)
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        if int(device[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' requested but this machine has {torch.cuda.device_count()} CUDA "
                             "device(s); choose from: cpu, auto, cuda")
        return torch.device(device)
    if device not in DEVICES:
        raise ValueError(f"unknown device '{device}'; choose from: {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available; choose from: cpu, auto")
    return torch.device(device)


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. Defaults are the seed notebook's: SGD lr 0.01, batch 64, 10 epochs."""

    epochs: int = 10  # full passes over the training set
    batch_size: int = 64  # the last, smaller batch of an epoch is kept (DataLoader's drop_last=False)
    lr: float = 0.01  # learning rate
    momentum: float = 0.0  # SGD momentum (torch semantics: v = m·v + g; p -= lr·v); ignored by adam
    optimizer: str = "sgd"  # sgd | adam
    eval_batch_size: int = 8192  # test-set evaluation chunk; affects memory only, not results
    diverge_loss: float = DIVERGE_LOSS  # diverged when the end-of-epoch test loss > diverge_loss·ln(C)

    def __post_init__(self):
        # numpy scalars are numbers too (np.int64(2) from a grid); bools never are (lr=True is a bug)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not is_integer(v) or not 0 < v <= MAX_INT:
                raise ValueError(f"{name} must be a positive integer up to {MAX_INT}, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not (is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number (finite), got {self.lr!r}")
        if not (is_real(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}'; choose from: {', '.join(OPTIMIZERS)}")
        if self.optimizer != "sgd" and self.momentum != 0:
            raise ValueError(f"momentum {self.momentum!r} has no effect with optimizer '{self.optimizer}' "
                             "(Adam has its own betas); drop it or use optimizer sgd")
        if not (is_real(self.diverge_loss) and self.diverge_loss > 1):  # inf is allowed: only non-finite values
            raise ValueError(f"diverge_loss must be a number > 1 (a multiple of the chance loss ln C; "
                             f"inf turns the bound off), got {self.diverge_loss!r}")
        for name in ("lr", "momentum", "diverge_loss"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The config a run record (a sweep's run parameters, a config.json's ``train``) describes; keys that
        are not TrainConfig fields are ignored, missing ones take the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def loss_bound(self, num_classes: int) -> float:
        """The test loss above which a run counts as diverged: ``diverge_loss · ln(num_classes)``."""
        return self.diverge_loss * math.log(max(num_classes, 2))


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(params, lr=config.lr)


def epoch_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """The order of the ``n`` training examples for one epoch (drawn on the generator's device)."""
    return torch.randperm(n, generator=generator, device=generator.device)


def batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive index slices of ``perm``; the last one may be smaller."""
    return list(torch.split(perm, batch_size))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in chunks of ``batch_size``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size)):
        logits = model(xb)
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = y.shape[0]
    return loss_sum.item() / n, correct.item() / n


@dataclass
class RunResult:
    """What one training run produced. ``epochs`` rows: epoch, train_loss, test_loss, test_acc."""

    epochs: list[dict] = field(default_factory=list)
    step_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per optimizer step
    diverged: bool = False
    diverged_epoch: int | None = None  # 1-based epoch in which it diverged; 0 = at init
    diverged_step: int | None = None  # 0-based global optimizer step of the first non-finite loss
    diverge_reason: str | None = None  # "non-finite loss", "non-finite activation (fc3)", "test loss ... > ..."


class NonFiniteWatch:
    """Forward hooks on every leaf module noting the first one whose output holds NaN/inf.

    ``first`` is its ``named_modules()`` name (None while all outputs are finite). One
    ``isfinite().all()`` per module call: cheap next to the layer itself. Hooks are removed on exit.
    """

    def __init__(self, model: nn.Module):
        self.model, self.first, self.handles = model, None, []

    def __enter__(self) -> NonFiniteWatch:
        for name, m in self.model.named_modules():
            if not any(True for _ in m.children()):
                self.handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if self.first is None and isinstance(output, torch.Tensor) and output.is_floating_point() \
                    and not bool(torch.isfinite(output).all()):
                self.first = name
        return hook


def nonfinite_reason(layer: str) -> str:
    return f"non-finite activation ({layer})"


def loss_bound_reason(test_loss: float, config: TrainConfig, num_classes: int) -> str:
    return (f"test loss {test_loss:.3g} > {config.diverge_loss:g}·ln {num_classes} "
            f"= {config.loss_bound(num_classes):.4g}")


NONFINITE_LOSS = "non-finite loss"


@torch.no_grad()
def check_init(model: nn.Module, x: torch.Tensor) -> str | None:
    """The divergence reason of a freshly initialized model on inputs ``x``, or None if it is finite.

    An init whose forward pass overflows (``normal(std=1)`` in a 40-layer ReLU MLP) cannot train:
    the run is recorded as diverged at init, with the first layer whose output is NaN/inf.
    """
    with NonFiniteWatch(model) as watch:
        model(x)
    return None if watch.first is None else nonfinite_reason(watch.first)


def close_epoch(result: RunResult, epoch: int, losses: np.ndarray, step0: int) -> dict:
    """The epoch's row from its per-step ``losses`` (step ``step0`` first); a NaN/inf loss marks
    ``result`` diverged at its first bad step and the row's metrics NaN. Shared by ``train_model``
    and both population engines, so all three record divergence identically."""
    bad = np.flatnonzero(~np.isfinite(losses))
    row = {"epoch": epoch, "train_loss": float(losses.mean()), "diverged": False}
    if bad.size:
        result.diverged, result.diverged_epoch, result.diverged_step = True, epoch, step0 + int(bad[0])
        result.diverge_reason = NONFINITE_LOSS
        row.update(train_loss=math.nan, test_loss=math.nan, test_acc=math.nan, diverged=True)
    return row


def close_evaluation(result: RunResult, row: dict, test_loss: float, test_acc: float, nonfinite: str | None,
                     config: TrainConfig, num_classes: int) -> bool:
    """Put the end-of-epoch evaluation into ``row``; True if the run goes on. It diverges (``result``
    and ``row`` say so, the measured values stay) on ``nonfinite``, a :func:`nonfinite_reason` from
    the evaluation, or a test loss above ``config.loss_bound(num_classes)``."""
    row["test_loss"], row["test_acc"] = float(test_loss), float(test_acc)
    reason = nonfinite
    if reason is None and not row["test_loss"] <= config.loss_bound(num_classes):
        reason = loss_bound_reason(row["test_loss"], config, num_classes)
    if reason is None:
        return True
    row["diverged"] = True
    result.diverged, result.diverged_epoch, result.diverge_reason = True, row["epoch"], reason
    return False


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step of ``model`` on the batch ``(x, y)`` (mean cross-entropy); returns the
    step's loss, detached, on the device. The single loop's step: :func:`train_model` takes it,
    :mod:`initlab.training.choice` times it."""
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


EpochCallback = Callable[[dict], None]
StepsCallback = Callable[[np.ndarray, int], None]  # (the epoch's per-step losses, index of its first step)


def train_model(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    seed: int,
    on_epoch: EpochCallback | None = None,
    on_steps: StepsCallback | None = None,
) -> RunResult:
    """Train ``model`` (already initialized, on the data's device) for ``config.epochs`` epochs.

    The data order comes from stream :data:`DATA_STREAM` of ``seed``. Per-step losses stay on the
    device during an epoch (no host sync per step); at the end of each epoch they are checked: a
    NaN/inf loss marks the run diverged at its first bad step and ends it. Test loss and accuracy
    are measured after every epoch; a NaN/inf activation during that evaluation, or a test loss
    above ``config.loss_bound(C)``, also marks it diverged (the row keeps the measured values).
    ``on_epoch`` receives each epoch row as it is made; ``on_steps(losses, step0)`` the epoch's
    per-step losses just before (so a caller can put them on disk epoch by epoch).
    """
    device = data.x_train.device
    opt = make_optimizer(model.parameters(), config)
    data_gen = make_generator(seed, DATA_STREAM, device)
    n = data.x_train.shape[0]
    result = RunResult()
    step_chunks = []
    step0 = 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        idx_batches = batches(epoch_permutation(n, data_gen), config.batch_size)
        losses = torch.empty(len(idx_batches), device=device)
        for i, idx in enumerate(idx_batches):
            losses[i] = train_step(model, opt, data.x_train[idx], data.y_train[idx])
        losses_np = losses.cpu().double().numpy()
        step_chunks.append(losses_np)
        row = close_epoch(result, epoch, losses_np, step0)
        if on_steps is not None:
            on_steps(losses_np, step0)
        if not result.diverged:
            with NonFiniteWatch(model) as watch:
                test_loss, test_acc = evaluate(model, data.x_test, data.y_test, config.eval_batch_size)
            close_evaluation(result, row, test_loss, test_acc,
                             None if watch.first is None else nonfinite_reason(watch.first), config, data.num_classes)
        result.epochs.append(row)
        if on_epoch is not None:
            on_epoch(row)
        step0 += len(idx_batches)
        if result.diverged:
            break
    result.step_losses = np.concatenate(step_chunks) if step_chunks else np.zeros(0)
    return result
