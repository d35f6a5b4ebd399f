"""The page of a ``claims`` result: every claim of the seed notebook with its verdict and evidence."""
from __future__ import annotations

import json

from initlab.report.common import Folder, join_words, num, page, plural, run_env, text

VERDICTS = ("confirmed", "refuted", "depends")


def evidence_rows(evidence) -> list[tuple[str, str]]:
    if not isinstance(evidence, dict):
        return []
    return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in evidence.items()]


def reading(claims: list[dict], quick: bool) -> list[str]:
    if not claims:
        return []
    counts = {v: [c for c in claims if c.get("verdict") == v] for v in VERDICTS}
    out = [f"{plural(len(claims), 'claim')} tested: " + join_words(
        [f"{len(cs)} {v}" for v, cs in counts.items() if cs]) + "."]
    for c in counts["refuted"]:
        out.append(f"Refuted — {text(c.get('short'))}: {text(c.get('summary'))}")
    if counts["depends"]:  # the condition is the finding; the numbers are in the table below
        out.append("Hold only under a condition: " + "; ".join(
            f"{text(c.get('short'))} ({text(c.get('condition')) or 'see the evidence'})" for c in counts["depends"]) + ".")
    other = [c for c in claims if c.get("verdict") not in VERDICTS]
    if other:
        out.append(f"No verdict for {join_words([text(c.get('id')) for c in other])}.")
    if quick:
        out.append("These are the quick versions of the experiments (--quick): smaller nets and fewer steps, so a "
                   "verdict may be less sharp than in the full run.")
    return out


def build(folder: Folder, report) -> dict:
    data = folder.json("claims.json") or {}
    claims = [c for c in data.get("claims", []) if isinstance(c, dict)]
    quick = bool(data.get("quick"))
    cards = []
    for c in claims:
        plot = text(c.get("plot"))
        cards.append({"id": text(c.get("id")), "section": text(c.get("section")), "quote": text(c.get("quote")),
                      "short": text(c.get("short")), "verdict": text(c.get("verdict")) or "none",
                      "condition": text(c.get("condition")), "summary": text(c.get("summary")),
                      "evidence": evidence_rows(c.get("evidence")),
                      "image": folder.image(plot) if plot and "/" not in plot else None, "plot": plot,
                      "seconds": f"{num(c.get('seconds')):.1f} s" if num(c.get("seconds")) == num(c.get("seconds")) else ""})
    total = sum(num(c.get("seconds")) for c in claims if num(c.get("seconds")) == num(c.get("seconds")))
    words = [("source", "the seed notebook's text on initialization (Parts 1–2), one experiment per claim"),
             ("mode", "quick (smaller experiments)" if quick else "full"),
             ("claims", ", ".join(c["id"] for c in cards))]
    return page(folder, report, template="claims.html.j2",
                title=f"claims: {plural(len(cards), 'claim')} of the seed notebook, tested",
                question="Which of the seed notebook's claims about initialization hold when measured?",
                reading=reading(claims, quick), cards=cards, config_words=words,
                environment=run_env(folder, None, total if claims else None))
