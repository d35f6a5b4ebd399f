"""Line charts as plain geometry for the report's SVG template: scales, ticks, paths, hover points.

Python computes every coordinate; ``templates/_chart.html.j2`` only writes them out (and escapes
every label), so a chart needs no script to draw and no network to view. Hover text travels in
``<title>`` elements (native tooltips without script; ``report.js`` shows them faster), and every
element of one init carries ``data-init`` so the legend buttons can hide it in every chart.
Non-finite values are gaps in a line, never a zero; a run that diverged is an × with its reason.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# matplotlib's default cycle, so a page and the PNGs of the same result colour an init alike
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
# Line styles as in initlab.plots.compare: paired seeds can give identical curves (zero and random at chance),
# and a dashed line keeps the one below visible.
DASHES = ("", "7 4", "7 3 2 3", "2 3")

WIDTH, HEIGHT = 560, 300
MARGIN = {"left": 62, "right": 14, "top": 12, "bottom": 46}


def color(key: int) -> str:
    return PALETTE[key % len(PALETTE)]


def dash(key: int) -> str:
    return DASHES[key % len(DASHES)]


def dot_radius(key: int, n_keys: int) -> float:
    """Dots shrink with the init's index (later ones are drawn on top): inits stuck at the same
    value, e.g. several at chance, show as concentric dots instead of one hiding the others."""
    return 2.4 + 3.6 * (n_keys - 1 - key) / max(n_keys - 1, 1)


def finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclass
class Point:
    x: float
    y: float
    tip: str = ""


@dataclass
class Series:
    """One init's line(s) in one chart. ``points`` with a None ``y`` break the line there."""

    key: int  # the init's index: colour, dash and the legend toggle
    label: str
    points: list[Point] = field(default_factory=list)
    band: list[tuple[float, float, float]] = field(default_factory=list)  # (x, low, high): spread over seeds
    thin: list[list[Point]] = field(default_factory=list)  # single runs drawn faintly under the mean
    crosses: list[Point] = field(default_factory=list)  # diverged runs: y None puts the × on the x axis
    style: str = "main"  # main | faint (a second line of the init, e.g. at init) | predicted (theory, dotted)
    markers: bool = True  # hoverable dots on the points (off for dense per-step lines: invisible targets)
    tip_every: int = 1  # every n-th point gets a hover target


class Scale:
    """Maps data to pixels, linear or log10; ``ticks()`` gives readable tick positions and labels."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        self.log = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12:
            pad = abs(lo) * 0.1 or (0.5 if log else 1.0)
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.a + (t - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self, n: int = 5) -> list[tuple[float, str]]:
        if self.log:
            first, last = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
            decades = list(range(first, last + 1))
            step = max(1, math.ceil(len(decades) / 7))
            values = [10.0 ** d for d in decades[::step]]
            if len(decades) <= 2:  # less than two decades: 2 and 5 help the eye
                values = sorted({m * 10.0 ** d for d in range(first - 1, last + 1) for m in (1, 2, 5)
                                 if self.lo - 1e-9 <= math.log10(m * 10.0 ** d) <= self.hi + 1e-9})
            return [(v, fmt_tick(v)) for v in values]
        step = nice_step((self.hi - self.lo) / n)
        start = math.ceil(self.lo / step - 1e-9) * step
        digits = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(math.log10(step)), 3) == 2.5 else 0)
        out, v = [], start
        while v <= self.hi + step * 1e-6:
            out.append((v, f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.2g}"))
            v += step
        return out


def nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag * 1.0001:
            return m * mag
    return 10 * mag


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:g}"
    exp = math.floor(math.log10(abs(v)) + 1e-9)
    mant = v / 10 ** exp
    return f"{mant:g}e{exp}" if round(mant, 6) != 1 else f"1e{exp}"


def fmt_value(v, digits: int = 4) -> str:
    """A number for a tooltip or table: 4 significant digits, or the word for inf/NaN."""
    if v is None:
        return "—"
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _path(points: Sequence[tuple[float, float] | None]) -> str:
    """SVG path data; None breaks the line (a gap, not a jump through zero)."""
    parts, pen = [], False
    for p in points:
        if p is None:
            pen = False
            continue
        parts.append(f"{'L' if pen else 'M'}{p[0]:.1f} {p[1]:.1f}")
        pen = True
    return "".join(parts)


def line_chart(series: Sequence[Series], *, xlabel: str, ylabel: str, title: str = "", caption: str = "",
               ylog: bool | str = "auto", xlog: bool = False, ylim: tuple[float, float] | None = None,
               xcategories: Sequence[str] | None = None, refs: Sequence[tuple[float, str]] = (),
               integer_x: bool = False) -> dict:
    """The geometry of one chart (see the module docstring); ``ylog="auto"``: log when the drawable
    values are all positive and span more than two decades. ``xcategories``: names at x = 0, 1, ...
    ``refs``: horizontal reference lines (y, label), e.g. the chance level. On a log axis, exact
    zeros sit on the bottom edge (a zero signal is a result worth seeing, not a missing value)."""
    values = [p.y for s in series for p in [*s.points, *(q for t in s.thin for q in t)] if finite(p.y)]
    values += [v for s in series for _, lo, hi in s.band for v in (lo, hi) if finite(v)]
    if ylog == "auto":
        pos = [v for v in values if v > 0]
        ylog = bool(pos) and min(values) >= 0 and max(pos) / min(pos) > 100
    if ylog:
        values = [v for v in values if v > 0]
    xs = [p.x for s in series for p in [*s.points, *s.crosses, *(q for t in s.thin for q in t)] if finite(p.x)]
    if xcategories is not None:
        xlo, xhi = -0.5, len(xcategories) - 0.5
    elif xs:
        xlo, xhi = min(xs), max(xs)
    else:
        xlo, xhi = 0.0, 1.0
    if ylim is not None:
        ylo, yhi = ylim
    elif values:
        ylo, yhi = min(values), max(values)
        if not ylog:
            pad = (yhi - ylo) * 0.06 or abs(yhi) * 0.1 or 1.0
            ylo, yhi = ylo - pad, yhi + pad
            if min(values) >= 0 and ylo < 0:
                ylo = 0.0
        else:
            ylo, yhi = ylo / 1.5, yhi * 1.5
    else:
        ylo, yhi = (1.0, 10.0) if ylog else (0.0, 1.0)
    x0, x1 = MARGIN["left"], WIDTH - MARGIN["right"]
    y0, y1 = HEIGHT - MARGIN["bottom"], MARGIN["top"]
    if xlog and xcategories is None:
        xlo, xhi = max(xlo, 1e-12), max(xhi, 1e-12)
    xpad = 0 if xcategories is not None else (8 if not xlog else 0)
    sx = Scale(xlo, xhi, x0 + xpad + (10 if xlog else 0), x1 - xpad - (10 if xlog else 0), log=xlog)
    sy = Scale(ylo, yhi, y0, y1, log=bool(ylog))

    def ok(p: Point) -> bool:
        return finite(p.x) and finite(p.y) and (not ylog or p.y >= 0) and (not xlog or p.x > 0)

    def py(v: float) -> float:
        return y0 if ylog and v <= 0 else min(max(sy(v), y1 - 4), y0 + 4)

    if xcategories is not None:
        step = max(1, math.ceil(len(xcategories) / 14))
        xticks = [(sx(i), str(name)) for i, name in enumerate(xcategories) if i % step == 0]
    elif (xlog or integer_x) and 1 < len(set(xs)) <= 12:  # few values (depths, epochs): tick each one
        xticks = [(sx(v), f"{v:g}") for v in sorted(set(xs))]
    elif xlog:
        xticks = [(sx(v), lab) for v, lab in sx.ticks()]
    else:
        ticks = sx.ticks(6)
        if integer_x:
            ticks = [(v, str(int(round(v)))) for v, _ in ticks if abs(v - round(v)) < 1e-9]
        xticks = [(sx(v), lab) for v, lab in ticks]
    yticks = [(sy(v), lab) for v, lab in sy.ticks()]
    out_series = []
    n_keys = max((s.key for s in series), default=0) + 1
    for s in series:
        pts = [(sx(p.x), py(p.y)) if ok(p) else None for p in s.points]
        band = [(sx(x), py(lo), py(hi)) for x, lo, hi in s.band
                if finite(x) and finite(lo) and finite(hi) and (not ylog or lo >= 0)]
        band_d = ""
        if len(band) > 1:
            band_d = _path([(x, hi) for x, _, hi in band] + [(x, lo) for x, lo, _ in reversed(band)]) + "Z"
        hover = [{"cx": round(sx(p.x), 1), "cy": round(py(p.y), 1), "tip": p.tip}
                 for i, p in enumerate(s.points) if ok(p) and p.tip and i % max(1, s.tip_every) == 0]
        crosses = [{"cx": round(sx(p.x), 1), "cy": round(py(p.y) if ok(p) else y0 - 6, 1), "tip": p.tip}
                   for p in s.crosses if finite(p.x) and (not xlog or p.x > 0)]
        out_series.append({
            "key": s.key, "label": s.label, "color": color(s.key),
            "dash": "" if s.style == "predicted" else dash(s.key), "style": s.style, "r": dot_radius(s.key, n_keys),
            "d": _path(pts), "band": band_d, "markers": s.markers, "hover": hover, "crosses": crosses,
            "thin": [d for d in (_path([(sx(p.x), py(p.y)) if ok(p) else None for p in t]) for t in s.thin) if d],
        })
    refs_out = [{"y": round(sy(v), 1), "label": label} for v, label in refs
                if finite(v) and (not ylog or v > 0) and y1 <= sy(v) <= y0]
    legend, seen = [], set()
    for s in series:
        if s.key not in seen:
            seen.add(s.key)
            legend.append({"key": s.key, "label": s.label, "color": color(s.key), "dash": dash(s.key)})
    return {"title": title, "caption": caption, "width": WIDTH, "height": HEIGHT,
            "x0": x0, "x1": x1, "y0": y0, "y1": y1, "xlabel": xlabel,
            "ylabel": ylabel + (" (log scale)" if ylog else ""), "xticks": xticks, "yticks": yticks,
            "series": out_series, "refs": refs_out, "legend": legend,
            "rotate_x": xcategories is not None and max((len(str(c)) for c in xcategories), default=0) > 5}
