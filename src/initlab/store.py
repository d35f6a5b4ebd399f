"""Results on disk, crash-safe, in folders initlab owns.

**Atomic files.** Every file is written to a temporary sibling, flushed, and renamed into place,
so a reader (or a crash, Ctrl-C, ``kill -9``) sees the old file or the new one, never a mix.
Files get mode ``0666 & ~umask`` like any file the user's shell would create (``mkstemp`` alone
would leave them 0600).

**The output-folder contract.** A result folder holds a marker file, ``.initlab.json``, naming
the kind of result (compare, depth, probe, claims) and every file and subfolder initlab wrote
there. ``--out`` must be new, empty, or such a folder; reusing one needs ``overwrite`` (the files
the marker lists are removed first, nothing else) or ``resume`` (the caller continues it). initlab
never writes over a file it did not create: a non-empty folder without a marker is refused.

A comparison folder holds ``config.json`` (written before any run starts), ``metrics.csv`` and
``runs.csv`` (rewritten after every finished run or epoch; every run's status), ``steps.csv``,
``probe.csv`` and, when the comparison ends or is interrupted, ``summary.json`` and plots.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

MARKER = ".initlab.json"
KINDS = ("compare", "depth", "probe", "claims", "audit", "coordcheck")


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Inside a result folder (one with a marker) the file's name is recorded in the marker first, so
    ``overwrite`` can later remove exactly what initlab wrote.
    """
    atomic_write_stream(path, lambda f: f.write(data))


def atomic_write_stream(path: Path, fill, *, keep_mode: bool = False) -> None:
    """Write ``path`` atomically with what ``fill(binary file)`` writes, streamed: a temporary file in the
    same folder, fsynced, then renamed over ``path``, so readers see the old file or the new one whole.

    Recorded in the folder's marker like :func:`atomic_write_bytes`. ``keep_mode``: the new file keeps
    ``path``'s permissions (a file rewritten in place) instead of the umask's.
    """
    path = Path(path)
    if path.name != MARKER:
        _record(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, os.stat(path).st_mode & 0o777 if keep_mode else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            fill(f)
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


def append_text(path: Path, text: str) -> None:
    """Append ``text`` (whole lines) to an existing file in one ``write`` call, then fsync.

    For logs that grow by whole records (steps.csv, epoch by epoch): a kill between calls leaves
    every earlier record intact; the file is rewritten atomically by its owner at safe points.
    """
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False))


# ---------------------------------------------------------------------- result folders


def read_marker(folder: str | Path) -> dict | None:
    """The marker of a result folder, or None if ``folder`` has none (or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in KINDS else None


def _write_marker(folder: Path, marker: dict) -> None:
    atomic_write_json(folder / MARKER, marker)


def _record(folder: Path, name: str) -> None:
    marker = read_marker(folder)
    if marker is not None and name not in marker.get("files", []):
        marker["files"] = [*marker.get("files", []), name]
        _write_marker(folder, marker)


def out_path(out: str | Path) -> Path:
    """An output folder as given by a user, ``~`` expanded (a quoted ``--out '~/x'`` means the home folder)."""
    return Path(out).expanduser()


def _describe(out: Path) -> str:
    return f"--out '{out}'" if str(out) else "--out ''"


def check_out_dir(out: str | Path, kind: str, *, overwrite: bool = False, resume: bool = False) -> str:
    """Check the output-folder contract without touching anything; return the folder's state.

    States: ``"new"`` (does not exist), ``"empty"``, ``"result"`` (an earlier initlab result of
    ``kind``). Raises a one-line ValueError for: an empty path, a file, a non-empty folder without
    a marker, an earlier result reused without ``overwrite``/``resume``, ``resume`` of a folder
    with nothing to resume or of another kind, and both flags at once.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r}; choose from: {', '.join(KINDS)}")
    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other; pick one")
    if not str(out).strip():
        raise ValueError("--out is empty; give a folder for the results, e.g. --out runs/mine")
    out = out_path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{_describe(out)} is a file, not a folder; choose a new or empty folder")
    if not out.exists():
        if resume:
            raise ValueError(f"nothing to resume: {_describe(out)} does not exist; drop --resume to start it")
        return "new"
    try:
        entries = [p.name for p in out.iterdir()]
    except OSError as e:
        raise ValueError(f"cannot read {_describe(out)}: {e.strerror}") from None
    marker = read_marker(out)
    if marker is None:
        if not entries:
            if resume:
                raise ValueError(f"nothing to resume: {_describe(out)} is empty; drop --resume to start it")
            return "empty"
        raise ValueError(f"{_describe(out)} is not empty and holds no initlab result (no {MARKER}); "
                         "initlab never writes over files it did not create: choose a new or empty folder")
    if resume and marker["kind"] != kind:
        raise ValueError(f"cannot resume: {_describe(out)} holds a {marker['kind']} result, not a {kind}; "
                         "choose another folder or use --overwrite")
    if not (overwrite or resume) and marker.get("files"):
        raise ValueError(f"{_describe(out)} holds an earlier initlab {marker['kind']} result "
                         f"(started {marker.get('created', '?')}); pass --overwrite to replace it, "
                         "--resume to continue it, or choose another folder")
    return "result"


def remove_result(out: Path, *, keep_marker: bool = True) -> None:
    """Delete what the marker of ``out`` lists (files, and subfolders that are results themselves).

    A subfolder goes entirely (marker included) unless the user put something of theirs in it.
    """
    marker = read_marker(out)
    if marker is None:
        return
    for name in marker.get("files", []):
        p = out / name.rstrip("/")
        if name.endswith("/"):
            if read_marker(p) is not None:
                remove_result(p, keep_marker=False)
                try:
                    p.rmdir()
                except OSError:  # the user put something of theirs there: keep it
                    pass
        elif p.is_file() or p.is_symlink():
            p.unlink()
    if keep_marker:
        marker["files"] = []
        _write_marker(out, marker)
    elif not any(p.name != MARKER for p in out.iterdir()):
        (out / MARKER).unlink()


def claim_out_dir(out: str | Path, kind: str, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Make ``out`` this command's result folder, per the contract of :func:`check_out_dir`.

    Creates it (and parents) if needed and writes the marker; with ``overwrite`` first removes the
    earlier result's files; with ``resume`` leaves them for the caller to continue. A folder made
    inside another result folder (``depth_05/`` of a depth sweep) is recorded in the parent's
    marker. An unwritable location is a one-line ValueError.
    """
    state = check_out_dir(out, kind, overwrite=overwrite, resume=resume)
    out = out_path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if state == "result" and not resume:
            remove_result(out)
        marker = read_marker(out) if resume else None  # resume keeps the record of what exists
        if marker is None:
            marker = {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": []}
        marker["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_marker(out, marker)
        full = out.resolve()
        if full.parent != full:
            _record(full.parent, full.name + "/")
    except OSError as e:
        where = f"'{e.filename}'" if getattr(e, "filename", None) else f"'{out}'"
        raise ValueError(f"cannot write results to {where}: {e.strerror or e}; choose a writable --out") from None
    return out


def write_error(e: OSError) -> ValueError:
    """A one-line error for a failed write in the middle of a command (disk full, permissions)."""
    where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
    return ValueError(f"cannot write results{where}: {e.strerror or e}; the files written before are intact")
