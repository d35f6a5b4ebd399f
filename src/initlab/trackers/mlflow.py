"""MLflow export of a finished comparison (``initlab compare --mlflow URI``).

The export runs *after* training, from the :class:`~initlab.experiments.compare.CompareResult` (or a compare
result folder on disk), like :mod:`initlab.trackers.tensorboard`. One MLflow run per (init, seed) in the
experiment ``initlab`` (``experiment=`` to change), named ``<init> seed <k>``, holding

- params: init, seed, dataset, model, hidden, activation, optimizer, lr, momentum, batch_size, epochs;
- metrics, each with its ``step``: ``step.train_loss`` at every optimizer step (global step);
  ``epoch.train_loss``, ``epoch.test_loss``, ``epoch.test_acc``, ``epoch.diverged`` (0/1) at
  step = epoch (1-based); ``probe.<stat>.<layer>`` for every finite per-layer probe statistic at
  step = epoch (0 = at init); ``final_test_acc``, ``final_test_loss`` at the last epoch. Names are
  reduced to MLflow's allowed characters (letters, digits, ``_ - . : /`` and space);
- tags: ``status`` (done, diverged, ...), ``diverged_epoch``, ``diverged_step``, ``diverge_reason``,
  ``epochs_done`` where known, ``initlab.command`` = compare; the MLflow run status is FINISHED for
  done and diverged runs, KILLED for runs an interruption left unfinished;
- artifacts: the result folder's plots (``plots/*.png``) and ``report.html`` when present (exporting
  from a folder, or from a result whose ``out`` is set).

Where it goes (``uri``):

- ``None``: the local folder ``./mlruns``; a path (a folder): ``<folder>/mlflow.db`` (SQLite) with the
  artifacts in ``<folder>/artifacts``; a path ending in ``.db``: that SQLite file, artifacts beside it;
- a URI (``sqlite:///path.db``, ``http://host:5000``, ``databricks``, ``file:...``): used as given.

Why SQLite and not the ``file:./mlruns`` store: MLflow 3 put the file store in maintenance mode and
refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set; a local SQLite file is what it asks for
instead and needs only ``sqlalchemy`` and ``alembic`` next to ``mlflow-skinny``
(``pip install 'initlab[mlflow]'``; view with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``
from the full ``mlflow`` package). MLflow is optional, checked by :func:`require`.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from initlab.trackers.common import RunRecord, hparams_record, probe_stat_columns, read_folder, run_keys

INSTALL_HINT = "pip install 'initlab[mlflow]'"
DEFAULT_DIR = "mlruns"
RUN_TAGS = ("epochs_done", "diverged_epoch", "diverged_step", "diverge_reason")
PLOTS = ("*.png", "*.svg")
BATCH = 1000  # MLflow's limit on metrics per log_batch call


def require() -> None:
    """ValueError (one line, naming the install command) unless MLflow (client and local store) is importable."""
    try:
        import alembic  # noqa: F401
        import mlflow  # noqa: F401
        import sqlalchemy  # noqa: F401  (the local SQLite store)
        from mlflow import MlflowClient  # noqa: F401
    except ImportError as e:
        raise ValueError(f"--mlflow needs the mlflow package ({e}); install it with: {INSTALL_HINT}") from None


def sanitize(name: str) -> str:
    """``name`` as an MLflow metric/param key: characters outside letters, digits, ``_ - . : /`` and space
    become ``_``; no leading ``/`` and no ``..`` (MLflow refuses both)."""
    text = re.sub(r"[^A-Za-z0-9_\-.: /]", "_", str(name))
    text = re.sub(r"\.{2,}", lambda m: "_" * len(m.group()), text).lstrip("/")
    return text or "_"


def resolve(uri: str | Path | None) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment or None to let MLflow choose) of ``uri``
    (see the module docstring)."""
    if uri is None:
        uri = DEFAULT_DIR
    text = str(uri)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
            db = Path(text[len("sqlite:///"):])
            return text, (db.parent.resolve() / "artifacts").as_uri()
        return text, None
    path = Path(text).expanduser()
    if path.suffix == ".db":
        if path.exists() and not path.is_file():
            raise ValueError(f"--mlflow '{path}' is a folder, not a SQLite file")
        folder, db = path.parent, path
    else:
        if path.exists() and not path.is_dir():
            raise ValueError(f"--mlflow '{path}' is a file; give a folder, a .db file or a tracking URI")
        folder, db = path, path / "mlflow.db"
    folder = folder.resolve()
    return f"sqlite:///{folder / db.name}", (folder / "artifacts").as_uri()


def client(uri: str | Path | None = None):
    """(MlflowClient, artifact location) for ``uri``: a local folder is created and its SQLite store set
    up (one line ValueError when MLflow is missing or refuses the store)."""
    require()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    tracking, artifacts = resolve(uri)
    if tracking.startswith("sqlite:///") and tracking != "sqlite:///:memory:":
        Path(tracking[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            c = MlflowClient(tracking_uri=tracking)  # opens (for SQLite: creates) the store now
    except MlflowException as e:
        raise ValueError(f"MLflow store '{tracking}' cannot be used: {_one_line(e.message)}") from None
    except Exception as e:  # noqa: BLE001 - e.g. sqlalchemy OperationalError on an unwritable path
        raise ValueError(f"MLflow store '{tracking}' cannot be used: {_one_line(str(e))}") from None
    return c, artifacts


def check(uri: str | Path | None) -> None:
    """For ``compare --mlflow`` before training: ValueError (one line) unless the package is there and
    the store can be used. A local SQLite store that does not exist yet is not created here (it may
    live inside the ``--out`` folder, which compare claims later): its nearest existing folder must
    be writable. An existing store, or a remote URI, is opened."""
    require()
    import os

    tracking, _ = resolve(uri)
    if tracking.startswith("sqlite:///") and tracking != "sqlite:///:memory:":
        db = Path(tracking[len("sqlite:///"):])
        if not db.exists():
            folder = db.parent
            while not folder.exists():
                folder = folder.parent
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                raise ValueError(f"MLflow store '{db}' cannot be created: '{folder}' is not a writable folder")
            return
    client(uri)


class _quiet:
    """Silence MLflow's and alembic's INFO logging and SQLAlchemy's deprecation warnings for a block."""

    NAMES = ("mlflow", "alembic")

    def __enter__(self):
        self._levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.WARNING)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from sqlalchemy.exc import SADeprecationWarning

            warnings.simplefilter("ignore", SADeprecationWarning)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        return False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _params(spec_d: dict, init: str, seed: int) -> dict[str, str]:
    hp = hparams_record(spec_d, init, seed, "")
    hp.pop("status", None)
    return {k: str(v) for k, v in hp.items()}


def _artifacts(folder: Path | None) -> list[tuple[Path, str | None]]:
    """(file, artifact folder) of the plots and report of a result folder."""
    if folder is None or not Path(folder).is_dir():
        return []
    folder = Path(folder)
    files = [(p, "plots") for pat in PLOTS for p in sorted(folder.glob(pat)) if p.is_file()]
    if (folder / "report.html").is_file():
        files.append((folder / "report.html", None))
    return files


def export(source, uri: str | Path | None = None, *, experiment: str = "initlab", data=None) -> list[str]:
    """Log a comparison to MLflow (see the module docstring for layout and names); returns the run ids.

    ``source``: a :class:`~initlab.experiments.compare.CompareResult` or a compare result folder. ``uri``: where
    (``None``: ``./mlruns``). ``data`` is accepted for symmetry with :func:`initlab.trackers.tensorboard.export`
    and unused (no weight histograms here). ValueError (one line) when MLflow is missing or refuses the
    store.
    """
    del data
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException


    c, artifact_location = client(uri)
    if isinstance(source, (str, Path)):
        folder = Path(source)
        _spec, spec_d, metrics, steps, probe, runs = read_folder(folder)
    else:
        folder = None if source.out is None else Path(source.out)
        spec_d = source.spec.to_dict()
        metrics, steps, probe, runs = source.metrics, source.steps, source.probe, source.runs
    keys = run_keys(runs, metrics)
    files = _artifacts(folder)

    stat_cols = probe_stat_columns(probe)
    ids: list[str] = []
    try:
        with _quiet():
            exp = c.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else \
                c.create_experiment(experiment, artifact_location=artifact_location)
            for init, seed in keys:
                rec = RunRecord.of(init, seed, metrics, steps, probe, runs)
                ids.append(_log_run(c, exp_id, rec, spec_d, stat_cols, files, Metric, Param, RunTag))
    except MlflowException as e:
        raise ValueError(f"MLflow export failed: {_one_line(e.message)}") from None
    return ids


def _log_run(c, exp_id, rec: RunRecord, spec_d, stat_cols, files, Metric, Param, RunTag) -> str:
    ts = int(time.time() * 1000)
    init, seed, run, status = rec.init, rec.seed, rec.run, rec.status
    tags: dict[str, Any] = {"status": status, "initlab.command": "compare"}
    if run is not None:
        for key in RUN_TAGS:
            if key in run and not pd.isna(run[key]):
                v = run[key]
                tags[key] = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
    r = c.create_run(exp_id, run_name=f"{init} seed {seed}", tags={k: str(v) for k, v in tags.items()})
    rid = r.info.run_id
    metrics: list = []

    def add(key, value, step):
        v = _num(value)
        if v is not None:
            metrics.append(Metric(sanitize(key), v, ts, int(step)))

    for parts, value, step in rec.scalars(stat_cols):
        add(".".join(parts), value, step)
    final_acc, final_loss = rec.final()
    add("final_test_acc", final_acc, rec.last_epoch)
    add("final_test_loss", final_loss, rec.last_epoch)

    params = [Param(k, v) for k, v in _params(spec_d, init, seed).items()]
    c.log_batch(rid, params=params)
    for i in range(0, len(metrics), BATCH):
        c.log_batch(rid, metrics=metrics[i:i + BATCH])
    for path, where in files:
        c.log_artifact(rid, str(path), where)
    c.set_terminated(rid, "FINISHED" if status in ("done", "diverged") else "KILLED")
    return rid
