"""Results on disk, crash-safe: every file is written to a temporary sibling and renamed into place.

A comparison directory holds ``config.json`` (the resolved spec, written before any run starts),
``metrics.csv`` (one row per run per epoch), ``steps.csv`` (per-step train loss) and, when the
comparison ends, ``summary.json`` and plots. ``metrics.csv`` is rewritten after every finished run (single engine) or
after every epoch of all runs (batched engine), so an interrupted comparison keeps what it finished,
and a rename never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` (and parents) if needed; a path that exists and is not a directory is an error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file, not a directory; choose a new or existing directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory '{out}': {e.strerror}") from None
    return out
