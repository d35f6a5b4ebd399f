"""What every report page shares: reading a result folder, the environment, raw-file links, images."""
from __future__ import annotations

import base64
import json
import math
import os
import platform
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from initlab import store
from initlab.report.charts import color, dash
from initlab.version import __version__

# Pictures embedded as data URIs so the page stands alone; bigger files are linked, not inlined.
MAX_INLINE_IMAGE = 4 << 20
# Input features of the datasets initlab knows (config.json names the dataset, not its shape).
IN_FEATURES = {"digits": 64, "mnist": 784, "fashion-mnist": 784}
HEALTHY_FORWARD, HEALTHY_GRAD = (0.5, 2.0), (0.1, 10.0)  # the audit's bands, for the probe's reading


class Folder:
    """A result folder: its marker, and its files read leniently (a missing file is None, not a crash)."""

    def __init__(self, path: Path, marker: dict):
        self.path, self.marker = path, marker
        self.kind = marker["kind"]
        self.missing: list[str] = []

    def json(self, name: str):
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            self.missing.append(name)
            return None

    def csv(self, name: str) -> pd.DataFrame | None:
        try:
            return pd.read_csv(self.path / name)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            self.missing.append(name)
            return None

    def image(self, name: str) -> str | None:
        """``data:image/png;base64,…`` of a PNG in the folder, or None (absent or too big)."""
        p = self.path / name
        try:
            if p.stat().st_size > MAX_INLINE_IMAGE:
                return None
            data = p.read_bytes()
        except OSError:
            return None
        if not data.startswith(b"\x89PNG"):
            return None
        return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def as_bool(v) -> bool:
    """A bool from a CSV cell: True, "True", 1; missing is False."""
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "1.0")
    try:
        return bool(v) and not (isinstance(v, float) and math.isnan(v))
    except (TypeError, ValueError):
        return False


def num(v) -> float:
    """A float from a cell, NaN for missing or unreadable."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def text(v) -> str:
    """A cell as text ('' for missing)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    return str(v)


def pm(mean, std, n: int, digits: int = 3) -> str:
    """``0.947 ± 0.004`` (the spread only when there are two or more runs)."""
    if not np.isfinite(num(mean)):
        return "—"
    return f"{num(mean):.{digits}f}" + (f" ± {num(std):.{digits}f}" if n > 1 and np.isfinite(num(std)) else "")


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def join_words(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def legend(inits) -> list[dict]:
    return [{"key": i, "label": str(name), "color": color(i), "dash": dash(i)} for i, name in enumerate(inits)]


def raw_files(folder: Folder, report: Path) -> list[dict]:
    """Links (relative to the report's own location) to every file the marker lists."""
    base = report.resolve().parent
    rows = []
    for name in folder.marker.get("files", []):
        if not isinstance(name, str) or name == report.name and folder.path.resolve() == base:
            continue
        target = folder.path / name.rstrip("/")
        sub_report = target / "report.html"
        if name.endswith("/") and sub_report.exists():
            target, label = sub_report, name + "report.html"
        else:
            label = name
        try:
            size = target.stat().st_size if target.is_file() else None
        except OSError:
            continue  # listed but gone
        rel = os.path.relpath(target.resolve(), base)
        # quote(): a name with '#', '?', ':' or spaces stays a relative link to that file
        rows.append({"name": label, "href": quote(Path(rel).as_posix()) + ("/" if target.is_dir() else ""),
                     "size": "" if size is None else human_size(size)})
    return rows


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def generator_env() -> list[tuple[str, str]]:
    """The versions that wrote this page (not necessarily those that ran the experiment)."""
    rows = [("initlab", __version__), ("python", platform.python_version())]
    try:
        import torch

        rows.append(("torch", torch.__version__))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    rows.append(("written", time.strftime("%Y-%m-%d %H:%M:%S %z")))
    return rows


def run_env(folder: Folder, config: dict | None, seconds) -> list[tuple[str, str]]:
    """Where and when the experiment ran, from config.json and the marker: what the folder records."""
    rows = []
    cfg = config or {}
    for key, label in (("torch", "torch"), ("python", "python"), ("resolved_device", "device")):
        if cfg.get(key):
            rows.append((label, str(cfg[key])))
    if cfg.get("device") and cfg.get("resolved_device") and cfg["device"] != cfg["resolved_device"]:
        rows[-1] = ("device", f"{cfg['resolved_device']} (asked: {cfg['device']})")
    if folder.marker.get("created"):
        rows.append(("started", str(folder.marker["created"])))
    if folder.marker.get("updated") and folder.marker.get("updated") != folder.marker.get("created"):
        rows.append(("last written", str(folder.marker["updated"])))
    if np.isfinite(num(seconds)):
        rows.append(("time inside the command", f"{num(seconds):.1f} s"))
    return rows


def page(folder: Folder, report: Path, **ctx) -> dict:
    """The context every template gets, plus the kind-specific ``ctx``."""
    ctx.setdefault("reading", [])
    ctx.setdefault("notes", [])
    ctx.setdefault("inits", [])
    ctx.setdefault("config_words", [])
    ctx.setdefault("config_raw", [])
    ctx.setdefault("environment", [])
    ctx.update(kind=folder.kind, folder=str(folder.path), files=raw_files(folder, report),
               generator=generator_env(), missing=sorted(set(folder.missing)))
    return ctx


def raw_config_rows(config: dict | None, skip=()) -> list[tuple[str, str]]:
    """config.json flattened to (key, value) rows for the 'every option' table."""
    rows = []
    if not config:
        return rows

    def walk(prefix, v):
        if isinstance(v, dict) and v:
            for k, w in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), w)
        elif prefix not in skip:
            rows.append((prefix, json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)))

    walk("", config or {})
    return rows


def load_marker(path: Path) -> dict:
    """The marker of a result folder, with one-line errors for everything that is not one."""
    if not path.exists():
        raise ValueError(f"no result folder at '{path}': it does not exist; give a folder written by "
                         "initlab compare, depth, probe, claims or audit")
    if not path.is_dir():
        raise ValueError(f"'{path}' is a file, not a result folder; give the folder initlab wrote")
    try:
        marker = json.loads((path / store.MARKER).read_text())
    except FileNotFoundError:
        raise ValueError(f"'{path}' holds no initlab result (no {store.MARKER}); give a folder written by "
                         "initlab compare, depth, probe, claims or audit") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the marker {store.MARKER} of '{path}': "
                         f"{getattr(e, 'strerror', None) or 'not valid JSON'}") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("kind"), str):
        raise ValueError(f"the marker {store.MARKER} of '{path}' names no result kind; it is not an initlab result")
    return marker
