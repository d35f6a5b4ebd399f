"""HTML reports (initlab.report): one self-contained page per result kind, escaped, read from the data.

The result folders are real, written by the Python API and the CLI with tiny settings on digits,
once per test session (:func:`result_folders`, shared with test_report_browser.py).
"""
from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from typer.testing import CliRunner

import initlab
from initlab import store
from initlab.cli import app
from initlab.report import REPORT_NAME, render_report, write_report
from initlab.report.charts import Point, Scale, Series, line_chart

KINDS = ("compare", "depth", "probe", "claims", "audit")
# normal(std=4) diverges on the test-loss bound (seed 0), normal(std=1e16) overflows at init (fc3)
COMPARE_INITS = "zero,random,xavier,he,normal(std=4),normal(std=1e16)"


def result_folders(root: Path) -> dict[str, Path]:
    """One small result folder of every kind under ``root``, made once (a second caller reuses them)."""
    paths = {k: root / k for k in KINDS}
    ready = root / "ready"
    if ready.exists():
        return paths
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is fastest, and immune to a busy machine
    try:
        _write_results(paths)
    finally:
        torch.set_num_threads(threads)
    ready.touch()
    return paths


def _write_results(paths: dict[str, Path]) -> None:
    from initlab.claims import run_claims

    initlab.compare(inits=COMPARE_INITS, dataset="digits", epochs=3, seeds=2, hidden="16,16", lr=0.1,
                    device="cpu", diverge_loss=2, out=paths["compare"])
    initlab.depth_sweep(depths=(1, 3), inits=("zero", "he"), dataset="digits", width=16, epochs=2, seeds=2,
                        lr=0.1, device="cpu", out=paths["depth"])
    run_claims(["large-weights-explode", "he-variance"], quick=True, out=paths["claims"])
    runner = CliRunner()
    for args in (["probe", "--depth", "3", "--width", "16", "--batch", "64", "--inits", "zero,random,he",
                  "--out", str(paths["probe"])],
                 ["audit", "mlp(depth=4,width=16,activation=tanh)", "--inits", "auto,he,xavier", "--batch", "64",
                  "--out", str(paths["audit"])]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    return result_folders(tmp_path_factory.getbasetemp() / "report-results")


@pytest.fixture(scope="session")
def reports(folders) -> dict[str, Path]:
    return {k: write_report(p) for k, p in folders.items()}


def copy_result(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / REPORT_NAME).unlink(missing_ok=True)
    return dst


class Page(HTMLParser):
    """The parts of a page the tests look at: links, images, table rows, reading items."""

    def __init__(self, html: str):
        super().__init__()
        self.links, self.srcs, self.rows, self.reading, self.scripts = [], [], [], [], 0
        self._in_reading = False
        self._open: list[list[str]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag in ("img", "script", "iframe", "source", "link") and ("src" in a or "href" in a):
            self.srcs.append(a.get("src") or a.get("href"))
        if tag == "tr" and "data-init" in a:
            self.rows.append(a["data-init"])
        if tag == "section" and a.get("id") == "reading":
            self._in_reading = True
        if tag == "li" and self._in_reading:
            self._open.append([])

    def handle_endtag(self, tag):
        if tag == "section":
            self._in_reading = False
        if tag == "li" and self._open:  # a nested item's text counts for its parent too
            text = " ".join("".join(self._open.pop()).split())
            self.reading.append(text)
            if self._open:
                self._open[-1].append(" " + text)

    def handle_data(self, data):
        if self._open:
            self._open[-1].append(data)


def html_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------- every kind


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_one_self_contained_page(reports, folders, kind):
    path = reports[kind]
    assert path == folders[kind] / REPORT_NAME
    assert REPORT_NAME in store.read_marker(folders[kind])["files"]  # --overwrite of the folder removes it
    html = html_of(path)
    # nothing loaded from anywhere: no URL in any src/href, no external stylesheet or script, no CSS url()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", html, re.I)
    assert "url(" not in html and "@import" not in html
    page = Page(html)
    assert all(s.startswith("data:image/png;base64,") for s in page.srcs if s), page.srcs
    for href in page.links:  # every link is a fragment or a relative link to a file that exists
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I), href
        if not href.startswith("#"):
            assert (path.parent / unquote(href)).exists(), href
    assert page.reading, "the page has no reading"
    assert "<svg" in html or kind == "claims"


def test_compare_page_tables_status_and_reasons(reports, folders):
    html = html_of(reports["compare"])
    page = Page(html)
    summary = json.loads((folders["compare"] / "summary.json").read_text())
    runs = pd.read_csv(folders["compare"] / "runs.csv")
    inits = [r["init"] for r in summary["per_init"]]
    # summary table (one row per init) and the table of every run, each row tagged with its init
    assert page.rows.count("0") == 1 + int((runs["init"] == inits[0]).sum())
    assert len(page.rows) == len(inits) + len(runs)
    for reason in runs["diverge_reason"].dropna().unique():
        assert reason.replace(">", "&gt;") in html  # every recorded reason is shown (escaped)
    assert "non-finite activation (fc3)" in html and "at init" in html
    for label in ("Test accuracy", "Test loss", "Training loss per epoch", "Training loss at every step",
                  "Dead units", "Symmetry: distinct hidden units"):
        assert label in html
    config = json.loads((folders["compare"] / "config.json").read_text())
    assert f"<td>{config['torch']}</td>" in html and f"<td>{config['python']}</td>" in html  # environment
    assert "digits: 1437 training / 360 test examples" in html


def test_compare_reading_is_computed_from_the_numbers(reports, folders, tmp_path):
    summary = json.loads((folders["compare"] / "summary.json").read_text())
    table = pd.DataFrame(summary["per_init"])
    ranked = table[(table["done"] > 0) & ~table["at_chance"].astype(bool)]
    best = ranked.sort_values("final_test_acc_mean").iloc[-1]
    reading = " ".join(Page(html_of(reports["compare"])).reading)
    assert f"{best['init']} reaches the best final test accuracy, {best['final_test_acc_mean']:.3f}" in reading
    assert "Paired by seed" in reading
    for init in table.loc[table["at_chance"].astype(bool), "init"]:
        assert f"{init} stays at chance" in reading
    assert "normal(std=1e+16) diverged in 2 of 2 runs" in reading
    assert "non-finite activation (fc3)" in reading
    assert "the symmetry never broke" in reading  # zero init, from probe.csv

    # other numbers, another reading: make xavier the winner in a copy
    other = copy_result(folders["compare"], tmp_path / "other")
    doctored = json.loads((other / "summary.json").read_text())
    for row in doctored["per_init"]:
        if row["init"] == "xavier":
            row["final_test_acc_mean"] = 0.999
    (other / "summary.json").write_text(json.dumps(doctored))
    reading = " ".join(Page(render_report(other)).reading)
    assert "xavier reaches the best final test accuracy, 0.999" in reading


def test_an_unfinished_compare_still_gets_a_page(folders, tmp_path):
    part = copy_result(folders["compare"], tmp_path / "part")
    (part / "summary.json").unlink()
    runs = pd.read_csv(part / "runs.csv")
    runs.loc[runs["init"] == "he", "status"] = "running"
    runs.to_csv(part / "runs.csv", index=False)
    html = render_report(part)
    assert "summary.json is missing" in html
    assert "This comparison did not finish" in html
    assert "2 runs did not finish (running)" in html


def test_depth_page_grid_reading_and_linked_subreports(reports, folders):
    html = html_of(reports["depth"])
    page = Page(html)
    summary = pd.read_csv(folders["depth"] / "depth_summary.csv")
    assert len(page.rows) == summary["init"].nunique()
    for d in (1, 3):
        assert (folders["depth"] / f"depth_{d:02d}" / REPORT_NAME).exists()
        assert f"depth_{d:02d}/report.html" in page.links
    reading = " ".join(page.reading)
    assert "zero does not train at any depth tested" in reading and "at chance at every depth" in reading
    assert "Final test accuracy against depth" in html


def test_probe_audit_claims_pages_read_their_data(reports, folders):
    probe = Page(html_of(reports["probe"]))
    assert any("relu network" in r for r in probe.reading) and any("tanh network" in r for r in probe.reading)
    assert "zero outputs exactly 0 at every layer" in " ".join(probe.reading)
    assert html_of(reports["probe"]).count('src="data:image/png;base64,') == 2  # the two histogram figures

    audit = pd.read_csv(folders["audit"] / "summary.csv")
    rec = audit.loc[audit["recommended"], "scheme"].iloc[0]
    assert Page(html_of(reports["audit"])).reading[0].startswith(f"Recommended: {rec}")

    claims = json.loads((folders["claims"] / "claims.json").read_text())["claims"]
    html = html_of(reports["claims"])
    for c in claims:
        assert c["id"] in html and f'v-{c["verdict"]}' in html
    assert html.count('src="data:image/png;base64,') == sum(1 for c in claims if c["plot"])


def test_every_string_from_the_folder_is_escaped(folders, tmp_path):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    claims = copy_result(folders["claims"], tmp_path / "claims")
    data = json.loads((claims / "claims.json").read_text())
    data["claims"][0].update(quote=evil, summary=evil, id=evil, condition=evil)
    data["claims"][0]["evidence"] = {evil: evil}
    (claims / "claims.json").write_text(json.dumps(data))
    compare = copy_result(folders["compare"], tmp_path / "compare")
    runs = pd.read_csv(compare / "runs.csv")
    runs.loc[runs["status"] == "diverged", "diverge_reason"] = evil
    runs.to_csv(compare / "runs.csv", index=False)
    for folder in (claims, compare):
        html = render_report(folder)
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(" in html
        assert html.count("<script>") == 1  # ours only


def test_links_are_relative_to_where_the_report_is_written(folders, tmp_path):
    out = tmp_path / "elsewhere" / "mine.html"
    out.parent.mkdir()
    assert write_report(folders["compare"], out) == out
    page = Page(html_of(out))
    files = [h for h in page.links if not h.startswith("#")]
    assert files and all((out.parent / unquote(h)).exists() for h in files)
    assert any(h.endswith("compare/metrics.csv") and h.startswith("../") for h in files)


def test_overwrite_of_the_result_folder_removes_its_report(folders, tmp_path):
    copy = copy_result(folders["audit"], tmp_path / "audit")
    write_report(copy)
    store.claim_out_dir(copy, "audit", overwrite=True)
    assert not (copy / REPORT_NAME).exists()


# ---------------------------------------------------------------------------------------- CLI


def test_cli_report_writes_the_page(folders, tmp_path):
    copy = copy_result(folders["probe"], tmp_path / "probe")
    res = CliRunner().invoke(app, ["report", str(copy)])
    assert res.exit_code == 0, res.output
    assert (copy / REPORT_NAME).exists() and "wrote" in res.output
    res = CliRunner().invoke(app, ["report", str(copy)])  # its own report: replaced
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("case", ["missing", "file", "no-marker", "unknown-kind", "foreign-out", "out-is-folder"])
def test_cli_report_errors_are_one_line_and_exit_2(folders, tmp_path, case):
    path, extra = tmp_path / "nothing", []
    if case == "file":
        path.write_text("x")
    elif case == "no-marker":
        path.mkdir()
        (path / "mine.txt").write_text("x")
    elif case == "unknown-kind":
        path.mkdir()
        (path / store.MARKER).write_text(json.dumps({"kind": "phase", "files": []}))
    elif case == "foreign-out":
        path = folders["compare"]
        mine = tmp_path / "notes.html"
        mine.write_text("<p>my own page</p>")
        extra = ["--out", str(mine)]
    elif case == "out-is-folder":
        path, extra = folders["compare"], ["--out", str(tmp_path)]
    res = CliRunner().invoke(app, ["report", str(path), *extra])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    if case == "foreign-out":
        assert (tmp_path / "notes.html").read_text() == "<p>my own page</p>"


# ---------------------------------------------------------------------------------------- charts


def test_scales_and_ticks():
    lin = Scale(0.0, 1.0, 0, 100)
    assert lin(0.5) == 50
    assert [lab for _, lab in lin.ticks()] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    log = Scale(1e-6, 10.0, 0, 100, log=True)
    assert [lab for _, lab in log.ticks()] == ["1e-6", "1e-4", "0.01", "1"]  # 8 decades: every other one
    short = Scale(0.3, 3.0, 0, 100, log=True)
    assert [lab for _, lab in short.ticks()] == ["0.5", "1", "2"]


def test_line_chart_gaps_zeros_and_crosses():
    pts = [Point(1, 1.0, "a"), Point(2, math.nan), Point(3, math.inf), Point(4, 1e-4, "b"), Point(5, 0.0, "c")]
    c = line_chart([Series(0, "x<y", pts, crosses=[Point(2, None, "diverged")])], xlabel="epoch", ylabel="loss")
    s = c["series"][0]
    assert c["ylabel"].endswith("(log scale)")  # positive values over four decades
    assert s["d"].count("M") == 2  # NaN/inf break the line instead of dropping to 0
    assert [p["tip"] for p in s["hover"]] == ["a", "b", "c"]
    assert s["hover"][-1]["cy"] == c["y0"]  # an exact zero sits on the bottom edge of a log axis
    assert s["crosses"][0]["cy"] == c["y0"] - 6
    lin = line_chart([Series(0, "x", [Point(0, 0.0), Point(1, 0.5)])], xlabel="x", ylabel="y", ylim=(0, 1))
    assert not lin["ylabel"].endswith("(log scale)")


@pytest.mark.parametrize("command", [
    ["compare", "--dataset", "digits", "--epochs", "1", "--inits", "zero,he", "--hidden", "8"],
    ["compare", "--dataset", "digits", "--epochs", "1", "--inits", "he", "--model", "cnn(depth=2,channels=4)"],
    ["audit", "mlp(depth=3,width=16)", "--inits", "he,xavier", "--batch", "32"],
])
def test_report_flag_writes_the_page_at_the_end(tmp_path, command):
    from typer.testing import CliRunner

    from initlab.cli import app

    out = tmp_path / "out"
    r = CliRunner().invoke(app, [*command, "--out", str(out), "--report"])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    assert "<table" in page and "report.html" in r.output
