"""The notebooks in notebooks/ run top to bottom on a fresh kernel, with no error and no warning.

Each notebook is stored without outputs (what a reader opens is what the code makes); the test executes
it with nbclient in a temporary working folder (its runs/ go there) and fails on an error, on any
stderr output of a cell (Python warnings are written there), and on a cell that runs past its budget.
A second test presses the kernel's stop button (an interrupt, as Jupyter does) during a comparison and
checks that the result folder says the same truthful things as after Ctrl-C in a terminal.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CELL_BUDGET_S = 300  # digits-sized experiments take seconds; a cell this slow is a bug


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"weight-initialization.ipynb", "your-own-model.ipynb", "sweeps.ipynb", "reports.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_clean(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"{path.name}: cells {stored} carry stored outputs; strip them"
    NotebookClient(nb, timeout=CELL_BUDGET_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name} cell {i}: {out.ename}: {out.evalue}"
            assert not (out.output_type == "stream" and out.name == "stderr"), \
                f"{path.name} cell {i} wrote to stderr (a warning?): {out.text[:500]}"
    # the results render inline as HTML, not as a dataclass dump
    htmls = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert htmls, f"{path.name}: no cell rendered HTML"
    if path.name == "weight-initialization.ipynb":  # compare's progress bars, as the CLI shows them, as a widget
        widgets = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert widgets, "no progress widget in the notebook's compare cell"



def test_stop_button_leaves_truthful_statuses(tmp_path):
    """An interrupt from the kernel's stop button mid-compare: finished runs done, the cut one interrupted."""
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        out = tmp_path / "runs" / "stopped"
        msg_id = kc.execute("import initlab\n"
                            f"initlab.compare(dataset='digits', inits=['xavier', 'he'], seeds=3, epochs=200, "
                            f"engine='single', probe=False, out={str(out)!r})")
        runs_csv = out / "runs.csv"
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until the first run has finished and the second is under way
            if runs_csv.exists():
                runs = pd.read_csv(runs_csv)
                if (runs.status == "done").any() and (runs.status == "running").any():
                    break  # (an interrupt between two runs has no run to cut: every status is then done or queued)
            time.sleep(0.2)
        else:
            pytest.fail("no run finished within 300 s")
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=120)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    runs = pd.read_csv(runs_csv)
    assert set(runs.status) <= {"done", "interrupted", "queued"}
    assert (runs.status == "done").sum() >= 1 and (runs.status == "interrupted").sum() == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
