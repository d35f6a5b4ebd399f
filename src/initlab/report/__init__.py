"""One self-contained HTML page per result folder: ``write_report(result_dir)``.

The page holds the question and configuration in words, the environment, the summary table with
the spread over seeds and the status of every run, the curves (SVG drawn here, hover to read a
value, click an init to hide it), what the probe saw inside the network, claims and verdicts or
audit flags, a short reading computed from the numbers, and relative links to the raw files.
Styles, script and pictures are inline: the file works offline, sent on its own (the links to raw
files then dangle, nothing else). Built with Jinja2 templates, autoescaped: every string from the
folder (scheme names, reasons, quotes) is escaped.

Kinds: ``compare`` (and each ``depth_XX/`` of a depth sweep), ``depth``, ``probe``, ``claims``,
``audit``, read from the folder's marker (:mod:`initlab.store`).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from initlab import store
from initlab.report import analysis, claims, compare, depth
from initlab.report.common import Folder, load_marker

REPORT_NAME = "report.html"
GENERATOR = '<meta name="generator" content="initlab report">'


def _builders() -> dict:
    return {"compare": compare.build, "depth": depth.build, "probe": analysis.build_probe,
            "claims": claims.build, "audit": analysis.build_audit}


def _environment():
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.PackageLoader("initlab.report", "templates"),
                             autoescape=True, trim_blocks=False, lstrip_blocks=False,
                             undefined=jinja2.StrictUndefined)
    files = resources.files("initlab.report") / "templates"
    # our own stylesheet and script, inline (trusted: shipped with the package, never user text)
    env.globals["css"] = Markup((files / "report.css").read_text(encoding="utf-8"))
    env.globals["js"] = Markup((files / "report.js").read_text(encoding="utf-8"))
    return env


def render_report(result_dir: str | Path, out: str | Path | None = None) -> str:
    """The HTML of ``result_dir``'s report, as it would be written to ``out`` (links are relative to it)."""
    path = Path(result_dir)
    marker = load_marker(path)
    builders = _builders()
    kind = marker["kind"]
    if kind not in builders:
        raise ValueError(f"no report for a result of kind {kind!r} in '{path}'; reports exist for: "
                         f"{', '.join(builders)}")
    target = Path(out) if out is not None else path / REPORT_NAME
    ctx = builders[kind](Folder(path, marker), target)
    template = ctx.pop("template")
    return _environment().get_template(template).render(**ctx)


def _check_target(target: Path) -> None:
    """initlab never writes over a file it did not create: an existing target must be a report."""
    if target.is_dir():
        raise ValueError(f"--out '{target}' is a folder; give a file name, e.g. '{target / REPORT_NAME}'")
    if not target.exists():
        if not target.parent.is_dir():
            raise ValueError(f"cannot write '{target}': the folder '{target.parent}' does not exist")
        return
    try:  # listed in a marker is not enough: config.json is initlab's too, and not to be replaced
        with open(target, "rb") as f:
            owned = GENERATOR.encode() in f.read(4096)
    except OSError:
        owned = False
    if not owned:
        raise ValueError(f"'{target}' exists and is not an initlab report; initlab never writes over files it "
                         "did not create: choose another --out")


def write_report(result_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the result folder ``result_dir`` and return its path.

    Args:
        result_dir: a folder written by ``initlab compare``, ``depth``, ``probe``, ``claims`` or
            ``audit`` (its kind comes from the marker ``.initlab.json``).
        out: the HTML file to write; default ``result_dir/report.html`` (then recorded in the
            folder's marker, so ``--overwrite`` of that folder removes it too). An existing file
            is replaced only if it is an initlab report.

    A depth sweep's report also writes the report of each ``depth_XX/`` comparison, linked from it.
    Raises a one-line ``ValueError`` for a missing folder, a folder that is not an initlab result,
    a kind without a report, or an unwritable ``out``.
    """
    result_dir = Path(result_dir)
    target = Path(out) if out is not None else result_dir / REPORT_NAME
    load_marker(result_dir)  # the folder's own errors first
    _check_target(target)
    marker = store.read_marker(result_dir) or {}
    if marker.get("kind") == "depth":
        for name in marker.get("files", []):
            sub = result_dir / name.rstrip("/")
            if name.endswith("/") and (store.read_marker(sub) or {}).get("kind") == "compare":
                write_report(sub)
    html = render_report(result_dir, target)
    try:
        store.atomic_write_text(target, html)
    except OSError as e:
        raise store.write_error(e) from None
    return target
