"""The coordinate check of μP (Yang et al. 2022, microsoft/mup's ``coord_check``) and the lr-transfer sweep.

``coord_check`` trains every width a few steps on one fixed batch under SP and μP and records the
mean |x| of each layer's output (forward hooks) at every step: under SP with Adam the logits grow
∝ width after one step; under μP every curve is flat in width.

The parametrization itself is :mod:`initlab.training.mup`.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from initlab.data import load_dataset
from initlab.models import make_model
from initlab.models.registry import ModelSpec, parse_model
from initlab.models.zoo import TransformerBlock
from initlab.store import atomic_write_bytes, atomic_write_csv, atomic_write_json, claim_out_dir
from initlab.training.mup import COORD_COLUMNS, OPTIMIZERS, PARAMETRIZATIONS, mup_parametrize


# ----------------------------------------------------------------------------- coordinate check


def _with_width(spec: str, width: int):
    s = parse_model(spec)
    if s.name not in ("mlp", "transformer"):
        raise ValueError(f"coordcheck runs the zoo mlp or transformer, got {s.name!r}")
    if "width" in s.params:
        raise ValueError(f"give the model without width ({spec!r}): the widths to check set it")
    heads = s.params.get("heads", 4)
    if s.name == "transformer" and isinstance(heads, int) and heads > 0 and width % heads:
        raise ValueError(f"width {width} is not divisible by heads={heads}; choose widths that are")
    return ModelSpec(s.name, {**s.params, "width": width})


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    ws = tuple(widths)
    if len(ws) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 1 << 14 for w in ws):
        raise ValueError(f"widths must be at least two integers from 1 to 16384, got {list(widths)!r}")
    if len(set(ws)) != len(ws):
        raise ValueError(f"widths must be distinct, got {list(ws)!r}")
    return tuple(sorted(ws))


class _L1Hooks:
    """Forward hooks recording mean |output| per named module; removed on exit."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.values: dict[str, float] = {}
        mods = dict(model.named_modules())
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.values[name] = output.detach().abs().mean().item()
        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _layers(model: nn.Module) -> list[str]:
    """The modules whose outputs the check records: leaves with parameters or activations, and blocks."""
    names = []
    for n, m in model.named_modules():
        if not n:
            continue
        if isinstance(m, TransformerBlock) or (not list(m.children()) and not isinstance(m, nn.Dropout)):
            names.append(n)
    return names


def check_coord_args(model: str = "mlp(depth=2)", widths: Sequence[int] = (64, 128), base_width: int | None = None,
                     steps: int = 3, seeds: int = 3, lr: float = 1e-2, optimizer: str = "adam", batch_size: int = 64,
                     parametrizations: Sequence[str] = PARAMETRIZATIONS):
    """Check :func:`coord_check`'s arguments without running anything: (sorted widths, base width, specs)."""
    widths = _check_widths(widths)
    base_width = widths[0] if base_width is None else base_width
    for what, v in (("steps", steps), ("seeds", seeds), ("batch_size", batch_size), ("base_width", base_width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from: {', '.join(OPTIMIZERS)}")
    bad = [p for p in parametrizations if p not in PARAMETRIZATIONS]
    if bad or not parametrizations:
        raise ValueError(f"unknown parametrization {bad[0] if bad else None!r}; choose from: {', '.join(PARAMETRIZATIONS)}")
    return widths, base_width, {w: _with_width(model, w) for w in widths}


def coord_check(model: str = "mlp(depth=2)", widths: Sequence[int] = (64, 128, 256, 512, 1024, 2048), *,
                base_width: int | None = None, steps: int = 3, seeds: int = 3, lr: float = 1e-2,
                optimizer: str = "adam", batch_size: int = 64, dataset: str = "digits", data=None,
                parametrizations: Sequence[str] = PARAMETRIZATIONS, readout_zero: bool = False,
                progress=None) -> pd.DataFrame:
    """μP's coordinate check: mean |x| of every layer's output vs width, per step, SP vs μP.

    For each parametrization, width (model ``model`` with ``width=`` set) and seed: draw the
    init (seed ``s``), train ``steps`` steps of ``optimizer`` at ``lr`` (μP: the plan's per-layer
    lrs, base ``base_width``, default the smallest width) on one fixed batch of ``batch_size``
    training examples, and record each layer's l1 = mean |output| (forward hooks) before step 1
    (``step`` 0) and after every step. Returns a long table: ``parametrization, width, seed, step,
    layer, l1``. Tensor Programs V §D / mup's ``get_coord_data``.
    """

    widths, base_width, specs = check_coord_args(model, widths, base_width, steps, seeds, lr, optimizer, batch_size,
                                                 parametrizations)
    data = load_dataset(dataset) if data is None else data
    in_shape = (1, *data.image_shape)  # zoo models take (C, H, W) and say what layout they want
    with torch.random.fork_rng(devices=[]):  # only its input layout is needed
        probe_model = make_model(specs[widths[0]], in_shape, data.num_classes)
    data = data.shaped(probe_model.input_shape)
    n = min(batch_size, data.x_train.shape[0])
    x, y = data.x_train[:n], data.y_train[:n]
    rows = []
    for par in parametrizations:
        for w in widths:
            for seed in range(seeds):
                with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG: not the caller's
                    torch.manual_seed(seed)
                    net = make_model(specs[w], in_shape, data.num_classes)
                plan = mup_parametrize(net, base_width, optimizer=optimizer, parametrization=par,
                                       readout_zero=readout_zero)
                plan.initialize(generator=torch.Generator().manual_seed(seed))
                groups = plan.param_groups(lr)
                opt = torch.optim.Adam(groups) if optimizer == "adam" else torch.optim.SGD(groups)
                names = _layers(net)
                with _L1Hooks(net, names) as hooks:
                    for step in range(steps + 1):
                        out = net(x)
                        rows += [(par, w, seed, step, layer, hooks.values[layer]) for layer in names]
                        if step == steps:
                            break
                        loss = nn.functional.cross_entropy(out, y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                if progress is not None:
                    progress(par, w, seed)
    return pd.DataFrame(rows, columns=list(COORD_COLUMNS))


def output_layer(coords: pd.DataFrame) -> str:
    """The logits' layer name: the last one recorded (the readout runs last in the zoo models)."""
    return coords["layer"].iloc[-1]


def growth(coords: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Per parametrization and layer: l1 at the largest width / l1 at the smallest, at ``step``.

    Means over seeds first; ``step`` defaults to the last one.
    """
    step = int(coords["step"].max()) if step is None else step
    m = coords[coords["step"] == step].groupby(["parametrization", "layer", "width"], sort=False)["l1"].mean()
    rows = []
    for (par, layer), s in m.groupby(level=[0, 1], sort=False):
        s = s.droplevel([0, 1]).sort_index()
        rows.append({"parametrization": par, "layer": layer, "step": step, "width_min": int(s.index[0]),
                     "width_max": int(s.index[-1]), "l1_min_width": s.iloc[0], "l1_max_width": s.iloc[-1],
                     "ratio": s.iloc[-1] / s.iloc[0]})
    return pd.DataFrame(rows)


def plot_coord_check(coords: pd.DataFrame, parametrization: str, path, *, title: str = "") -> None:
    """mup-style figure: one log-log panel per step, l1 (mean over seeds) vs width, a line per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = coords[coords["parametrization"] == parametrization]
    steps = sorted(d["step"].unique())
    ylim = (coords["l1"].min() * 0.7, coords["l1"].max() * 1.4)  # same y range for SP and μP
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.4), sharey=True, squeeze=False)
    layers = list(dict.fromkeys(d["layer"]))
    cmap = plt.get_cmap("viridis")
    for ax, step in zip(axes[0], steps):
        m = d[d["step"] == step].groupby(["layer", "width"])["l1"].mean()
        for i, layer in enumerate(layers):
            s = m.loc[layer]
            ax.plot(s.index, s.values, marker=".", color=cmap(i / max(1, len(layers) - 1)), label=layer)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(*ylim)
        ax.set_title(f"step {step}")
        ax.set_xlabel("width")
    axes[0][0].set_ylabel("mean |x| (l1 per coordinate)")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title or f"coordinate check: {parametrization}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


_CHECKED = ("model", "widths", "base_width", "steps", "seeds", "lr", "optimizer", "batch_size", "parametrizations")


def run_coord_check(out, *, overwrite: bool = False, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`coord_check` into a result folder: coords.csv, growth.csv, coordcheck_sp/mup.png, config.json."""
    import io


    check_coord_args(**{k: v for k, v in kwargs.items() if k in _CHECKED})
    out = claim_out_dir(out, "coordcheck", overwrite=overwrite)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k not in ("data", "progress")}
    config["torch"] = torch.__version__
    atomic_write_json(out / "config.json", config)
    t0 = time.perf_counter()
    coords = coord_check(**kwargs)
    seconds = time.perf_counter() - t0
    g = growth(coords)
    atomic_write_csv(out / "coords.csv", coords)
    atomic_write_csv(out / "growth.csv", g)
    atomic_write_json(out / "config.json", {**config, "seconds": round(seconds, 2)})
    for par in coords["parametrization"].unique():
        buf = io.BytesIO()
        label = {"sp": "SP (He init, one lr)", "mup": "μP"}[par]
        plot_coord_check(coords, par, buf, title=f"{label}: {config.get('model', 'mlp(depth=2)')}, "
                                                 f"{config.get('optimizer', 'adam')} lr {config.get('lr', 1e-2)}")
        atomic_write_bytes(out / f"coordcheck_{par}.png", buf.getvalue())
    return coords, g


# ----------------------------------------------------------------------------- lr transfer


def lr_transfer(model: str = "mlp(depth=2)", widths: Sequence[int] = (64, 256, 1024), lrs: Sequence[float] = (),
                *, base_width: int | None = None, steps: int = 200, seeds: int = 2, batch_size: int = 128,
                optimizer: str = "adam", data=None, dataset: str = "digits",
                parametrizations: Sequence[str] = PARAMETRIZATIONS) -> pd.DataFrame:
    """Training loss after ``steps`` minibatch steps for every (parametrization, width, lr, seed).

    Tensor Programs V Fig. 1: under SP the best lr moves with width, under μP it stays where the
    base width put it. The loss is the mean training loss over the last 10% of steps (a diverged
    run's loss is inf). Returns ``parametrization, width, lr, seed, loss``.
    """

    lrs = tuple(lrs) or tuple(2.0 ** k for k in range(-14, -3))
    widths, base_width, specs = check_coord_args(model, widths, base_width, steps, seeds, lrs[0], optimizer,
                                                 batch_size, parametrizations)
    data = load_dataset(dataset) if data is None else data
    in_shape = (1, *data.image_shape)
    with torch.random.fork_rng(devices=[]):  # only its input layout is needed
        data = data.shaped(make_model(specs[widths[0]], in_shape, data.num_classes).input_shape)
    x_all, y_all = data.x_train, data.y_train
    tail = max(1, steps // 10)
    rows = []
    for par in parametrizations:
        for w in widths:
            for lr in lrs:
                for seed in range(seeds):
                    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
                        torch.manual_seed(seed)
                        net = make_model(specs[w], in_shape, data.num_classes)
                    plan = mup_parametrize(net, base_width, optimizer=optimizer, parametrization=par)
                    plan.initialize(generator=torch.Generator().manual_seed(seed))
                    groups = plan.param_groups(lr)
                    opt = torch.optim.Adam(groups) if optimizer == "adam" else torch.optim.SGD(groups)
                    g = torch.Generator().manual_seed(1000 + seed)  # same batches for every width and lr
                    losses = []
                    for step in range(steps):
                        idx = torch.randint(0, x_all.shape[0], (batch_size,), generator=g)
                        loss = nn.functional.cross_entropy(net(x_all[idx]), y_all[idx])
                        if not torch.isfinite(loss):
                            losses = [math.inf]
                            break
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        if step >= steps - tail:
                            losses.append(loss.item())
                    rows.append((par, w, lr, seed, sum(losses) / len(losses)))
    return pd.DataFrame(rows, columns=["parametrization", "width", "lr", "seed", "loss"])


def best_lrs(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per parametrization and width: the lr with the lowest seed-mean loss, and that loss."""
    m = sweep.groupby(["parametrization", "width", "lr"])["loss"].mean().reset_index()
    best = m.loc[m.groupby(["parametrization", "width"])["loss"].idxmin()]
    return best.reset_index(drop=True)
