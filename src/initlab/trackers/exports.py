"""The trackers as the commands use them: checked before any training, exported after.

A missing package, a TensorBoard folder that already holds these runs or an unusable MLflow
store is refused by :func:`check_trackers` before anything trains; a failed export afterwards is
one ``ValueError`` naming the tracker and where it wrote.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from initlab.trackers import mlflow as mx
from initlab.trackers import tensorboard as tb


def depth_logdir(logdir: str | Path, depth: int) -> Path:
    """Where a depth sweep's comparison at ``depth`` goes: ``DIR/depth_XX``."""
    return Path(logdir) / f"depth_{depth:02d}"


def check_trackers(inits: Iterable[str], seeds: Iterable[int], *, tensorboard: str | None = None,
                   mlflow: str | None = None, depths: Iterable[int] | None = None) -> None:
    """Refuse now what an export after training would fail on; ``depths``: a depth sweep's (``DIR/depth_XX``)."""
    if tensorboard is not None:
        tb.require()
        for logdir in [tensorboard] if depths is None else [depth_logdir(tensorboard, d) for d in depths]:
            tb.check_logdir(logdir, inits, seeds)
    if mlflow is not None:
        mx.check(mlflow)


def export_tensorboard(results: dict, logdir: str | Path, *, data=None) -> int:
    """Export comparisons to TensorBoard: ``results`` maps a sub-folder (None: ``logdir`` itself, or a depth:
    ``depth_XX``) to its ``CompareResult``. Returns the number of runs written."""
    try:
        return sum(len(tb.export(res, logdir if key is None else depth_logdir(logdir, key), data=data))
                   for key, res in results.items())
    except (ValueError, OSError) as e:
        raise ValueError(f"TensorBoard export to '{logdir}' failed: {e}") from None


def export_mlflow(result, uri: str) -> tuple[int, str]:
    """Log a comparison to MLflow; returns the number of runs logged and the tracking URI used."""
    try:
        return len(mx.export(result, uri)), mx.resolve(uri)[0]
    except (ValueError, OSError) as e:
        raise ValueError(f"MLflow export to '{uri}' failed: {e}") from None
