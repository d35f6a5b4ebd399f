import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from initlab.claims import CLAIMS, VERDICTS, ClaimResult, get_claim, list_claims, run_claims
from initlab.cli import app

runner = CliRunner()
SEED = Path("/work/shared/seed/weight-initialization-notebook.txt")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("claims")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: one thread is several times faster than two fighting
    try:
        return out, {r.id: r for r in run_claims(out=out, quick=True)}
    finally:
        torch.set_num_threads(n)


def test_registry_covers_the_seed():
    ids = list_claims()
    assert len(ids) >= 12 and len(set(ids)) == len(ids)
    for must in ("zero-symmetry", "zero-vanishing-derivative", "small-weights-vanish", "large-weights-explode",
                 "variance-matched-activation", "xavier-variance", "he-variance", "he-higher-than-xavier",
                 "xavier-for-tanh-sigmoid", "normal-001-helps", "init-speeds-convergence", "random-breaks-symmetry"):
        assert must in ids


@pytest.mark.skipif(not SEED.exists(), reason="seed notebook not available")
@pytest.mark.parametrize("claim_id", [c for c in CLAIMS if CLAIMS[c].check.__module__ == "initlab.claims.seed"])
def test_quotes_are_verbatim(claim_id):
    seed = " ".join(SEED.read_text().split())
    assert CLAIMS[claim_id].quote in seed


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_every_claim_gives_a_verdict_with_evidence(quick_results, claim_id):
    out, results = quick_results
    r = results[claim_id]
    assert isinstance(r, ClaimResult) and r.verdict in VERDICTS
    assert r.evidence and r.summary
    assert (r.verdict == "depends") == bool(r.condition)
    json.dumps(r.evidence)  # JSON-able
    if r.plot:
        assert Path(r.plot).stat().st_size > 0


def test_mathematically_certain_verdicts(quick_results):
    _, res = quick_results
    assert res["zero-symmetry"].verdict == "confirmed"
    assert res["zero-symmetry"].evidence["relu_zero_distinct_units"] == [1, 1]
    assert res["zero-symmetry"].evidence["sigmoid_zero_distinct_units"] == [1, 1]
    assert res["random-breaks-symmetry"].verdict == "confirmed"
    z = res["zero-vanishing-derivative"]
    assert z.verdict == "refuted"
    assert z.evidence["tanh_derivative_at_0"] == pytest.approx(1.0, abs=1e-12)
    assert z.evidence["sigmoid_derivative_at_0"] == pytest.approx(0.25, abs=1e-12)
    assert z.evidence["tanh_zero_fc1_weight_norm_after_1_epoch"] == 0.0  # tanh(0)=0 and W2=0: no signal at all
    assert z.evidence["sigmoid_zero_fc1_weight_norm_after_1_epoch"] > 0  # moves, but symmetrically
    assert z.evidence["sigmoid_zero_distinct_hidden_units"] == 1
    for cid in ("xavier-variance", "he-variance", "he-higher-than-xavier"):
        assert res[cid].verdict == "confirmed", res[cid].summary


def test_reports_written(quick_results):
    out, results = quick_results
    data = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in data["claims"]] == list(CLAIMS)
    assert all(c["quote"] and c["verdict"] in VERDICTS for c in data["claims"])
    md = (out / "claims.md").read_text()
    for cid in CLAIMS:
        assert f"## {cid}:" in md
    assert "zero_vanishing_derivative.png" in md


def test_unknown_claim_lists_valid_ids():
    with pytest.raises(ValueError, match="unknown claim 'nope'; choose from: zero-symmetry"):
        get_claim("nope")
    with pytest.raises(ValueError):
        ClaimResult("x", "maybe", "", "s")
    with pytest.raises(ValueError, match="condition"):
        ClaimResult("x", "depends", "", "s")


def test_cli_claims_only(tmp_path):
    r = runner.invoke(app, ["claims", "--only", "xavier-variance,he-variance", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "xavier-variance" in r.output and "confirmed" in r.output
    assert [c["id"] for c in json.loads((tmp_path / "claims.json").read_text())["claims"]] == \
        ["xavier-variance", "he-variance"]


def test_cli_list():
    r = runner.invoke(app, ["claims", "--list"])
    assert r.exit_code == 0 and "zero-symmetry" in r.output


@pytest.mark.parametrize("args, message", [
    (["--only", "zero-symmetry,bogus"], "unknown claim 'bogus'; choose from: zero-symmetry"),
    (["--threads", "0"], "--threads must be from 1 to"),
])
def test_cli_bad_input(tmp_path, args, message):
    r = runner.invoke(app, ["claims", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_papers_claims_follow_the_seeds_and_say_when_paraphrased():
    ids = list_claims()
    papers = [c for c in ids if CLAIMS[c].check.__module__ == "initlab.claims.papers"]
    assert papers == ["lsuv-unit-variance", "fixup-trains-without-normalization", "gpt2-residual-scaling",
                      "zero-rank-bounded", "delta-orthogonal-isometry"] + papers[5:]
    assert ids.index(papers[0]) > max(i for i, c in enumerate(ids) if CLAIMS[c].check.__module__.endswith(".seed"))
    for c in papers:
        assert ("paraphrased" in CLAIMS[c].quote) == ("paraphrased" in CLAIMS[c].section)


def test_papers_verdicts_on_the_quick_settings(quick_results):
    _, res = quick_results
    assert res["lsuv-unit-variance"].verdict == "confirmed"
    assert res["gpt2-residual-scaling"].verdict == "confirmed"
    assert res["zero-rank-bounded"].evidence["partial_identity_rank_update"] <= 16
    assert res["delta-orthogonal-isometry"].verdict == "confirmed"
    assert res["mup-coordinate-check"].verdict == "confirmed"
    assert res["fixup-trains-without-normalization"].evidence["lr0.1_fixup"]["status"] == "done"


def test_a_claim_given_twice_is_refused_before_anything_runs(tmp_path):
    res = CliRunner().invoke(app, ["claims", "--only", "zero-symmetry,xavier-variance,zero-symmetry", "--quick",
                                   "--out", str(tmp_path / "c")])
    assert res.exit_code == 2
    assert "claim 'zero-symmetry' is given twice" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="given twice"):
        run_claims(["he-variance", "he-variance"])
