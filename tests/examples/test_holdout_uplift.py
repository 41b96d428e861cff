"""examples/holdout_uplift.py: measure finds the planted effect (win-back, +5 points of conversion) and
finds none where none was planted (newsletter)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _example():
    spec = importlib.util.spec_from_file_location("holdout_uplift", ROOT / "examples" / "holdout_uplift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_finds_the_planted_effect_and_not_the_absent_one(tmp_path):
    example = _example()
    m = example.run(tmp_path, customers=20_000, seed=17)
    rules = {r["rule"]: r for r in m["rules"]}
    planted = example.BUY[("win-back", "treatment")] - example.BUY[("win-back", "control")]

    win = rules["win-back"]
    up = win["conversion_uplift"]
    assert up["significant"] and up["low"] > 0
    assert up["low"] <= planted <= up["high"]  # the interval holds the effect that was planted
    assert win["revenue_uplift"]["significant"]
    assert not win["srm"]["mismatch"]

    news = rules["newsletter"]
    assert not news["conversion_uplift"]["significant"]
    assert news["conversion_uplift"]["low"] <= 0 <= news["conversion_uplift"]["high"]
    assert not news["revenue_uplift"]["significant"]
    assert not news["srm"]["mismatch"]
    # and the smallest effect the groups could have found is below the planted one
    assert win["mde"]["conversion"] < planted
