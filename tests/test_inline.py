"""Results render in Jupyter as their report pages (report.inline through core.display), and say what they are."""
import html
import re

import torch

import initlab
from initlab.claims import run_claims
from initlab.experiments.sweeps import SweepSpec, run_sweep


def _page(frame_html: str) -> str:
    assert frame_html.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame_html
    return html.unescape(re.search(r'srcdoc="(.*?)" sandbox', frame_html, re.S).group(1))


def test_compare_with_or_without_a_folder_renders_its_report(tmp_path):
    for out in (None, tmp_path / "c"):
        result = initlab.compare(inits="he,zero", dataset="digits", epochs=1, out=out, progress=False)
        page = _page(result._repr_html_())
        assert "<title>compare: he, zero on digits" in page
        assert "he" in repr(result) and repr(result).startswith("<CompareResult: 2 inits × 1 seed on digits")
    assert not any(p.name.startswith("initlab-inline-") for p in tmp_path.iterdir())


def test_audit_claims_and_sweep_render():
    report = initlab.audit(initlab.make_model("cnn", (1, 8, 8), 10), torch.randn(16, 1, 8, 8), ["he", "xavier"])
    assert "<title>audit" in _page(report._repr_html_())
    assert repr(report) == "<AuditReport: CNN under 2 schemes (he, xavier); recommended: " + f"{report.recommended}>"
    claims = run_claims(["xavier-variance"], quick=True)
    assert "xavier-variance" in _page(claims._repr_html_())
    assert repr(claims).startswith("<ClaimResults: 1 claims (")


def test_sweep_renders_counts_and_best_lr(tmp_path):
    spec = SweepSpec({"inits": ["he", "xavier"], "lr": [0.01, 0.1], "epochs": 1, "dataset": "digits"}, name="inline")
    result = run_sweep(spec, tmp_path / "s.db", progress=False)
    text = result._repr_html_()
    assert "4 runs (4 done)" in text and "best_lr" in text
    assert repr(result).startswith("<SweepResult: sweep 'inline', 4 runs (4 done)")
