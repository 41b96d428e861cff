"""Every notebook runs top to bottom in a fresh kernel, and writes nothing into the repository."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WATCHED = ("notebooks", "playbooks")  # where a notebook could write (others edit the rest meanwhile)


def snapshot() -> dict[str, str]:
    out = {}
    for top in WATCHED:
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and ".ipynb_checkpoints" not in path.parts:
                out[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_there_are_five_notebooks_with_outputs_cleared():
    assert [p.name for p in NOTEBOOKS] == ["01-quickstart.ipynb", "02-tune-thresholds.ipynb",
                                           "03-write-a-classifier-plugin.ipynb", "04-playbook-explorer.ipynb",
                                           "05-migration-and-kpis.ipynb"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not cleared"


def outputs(book) -> list:
    return [o for c in book.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = snapshot()
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert snapshot() == before, "the notebook wrote into the repository"
    if path.stem == "01-quickstart":
        # the class summary as people read it: every row, shares in percent, money with two decimals
        tables = [o["data"]["text/plain"] for o in outputs(book) if "text/plain" in o.get("data", {})
                  and "% customers" in o["data"]["text/plain"]]
        assert len(tables) == 2 and all("…" not in t for t in tables)
        first = tables[0]
        assert re.search(r"│ abc\s+┆ A\s+┆ \d+\s+┆ \d+\.\d%\s+┆ [\d,]+\.\d\d\s+┆ \d+\.\d%", first), first
        # three header lines, then every class of abc (3), adc (6) and value_tier (3)
        assert sum(line.startswith("│ ") for line in first.splitlines()) == 3 + 3 + 6 + 3
    if path.stem == "04-playbook-explorer":
        views = [o for o in outputs(book) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(views) == 2  # the rule picker and the customer picker
        text = "".join(o.get("text", "") for o in outputs(book))
        # what the pickers show first is in their Output widgets' state
        shown = json.dumps(book.metadata.get("widgets", {}))
        assert re.search(r"vip-privileges: \d+ customers matched", shown)
        assert re.search(r"customer \d+ \(as of [\d-]+\)", shown) and "rules (hit policy: all)" in shown
        assert "270 customers, revenue 381,284.52" in text
    if path.stem == "02-tune-thresholds":
        text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code"
                       for o in c.outputs if o.output_type == "stream")
        assert "-    hv_min_r: 3\n+    hv_min_r: 4\n" in text
    if path.stem == "05-migration-and-kpis":
        text = "".join(o.get("text", "") for o in outputs(book) if o.output_type == "stream")
        assert re.search(r"Of the \d+ A customers as of 2011-09-10, \d+ are B or C as of 2011-12-10; \d+ stayed A\. "
                         r"Those who slipped had brought [\d,]+\.\d\d up to 2011-09-10", text), text
        plots = [o["data"]["application/vnd.plotly.v1+json"] for o in outputs(book)
                 if "application/vnd.plotly.v1+json" in o.get("data", {})]
        assert [p["data"][0]["type"] for p in plots] == ["heatmap", "sankey", "scatter", "scatter", "heatmap"]
        # the workbench after its as_of moved back a quarter: the migration tables are in its state
        shown = json.dumps(book.metadata.get("widgets", {}))
        assert "migration from 2011-09-10 to 2011-12-10" in shown and "tierbook-migration-count" in shown
