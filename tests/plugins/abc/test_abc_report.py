"""ABC's report chart: the Pareto curve and the A and B bands are the run's classes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from engine.fastpath import Table
from engine.report import Figure
from engine.run import Selection, apply_classifiers
from plugins.abc import ABC
from plugins.abc.report import CURVE_POINTS


def chart(customers: pl.DataFrame, **params) -> tuple[Figure, pl.DataFrame]:
    p = ABC.resolve(params)
    classified = apply_classifiers(customers, [Selection(ABC, p)], as_of=dt.date(2024, 1, 1))
    [fig] = ABC.report(ABC, Table.of(classified, dt.date(2024, 1, 1)), p)
    return fig, classified


@pytest.mark.parametrize("params", [{}, {"a": 0.5, "b": 0.9}, {"mode": "rank"}, {"crossing": "upper"}])
def test_the_bands_are_the_classes_and_the_curve_is_the_metric(params):
    rng = np.random.default_rng(7)
    customers = pl.DataFrame({"customer_id": [f"c{i}" for i in range(500)],
                              "monetary": np.round(rng.pareto(1.2, 500) * 100 - 20, 2)})
    fig, classified = chart(customers, **params)
    n = classified.height
    counts = classified["abc"].value_counts()
    share = {str(k): v / n for k, v in counts.iter_rows()}
    a_band, b_band = fig.layout["shapes"][:2]
    assert a_band["x1"] == pytest.approx(share.get("A", 0))
    assert b_band["x0"] == pytest.approx(share.get("A", 0))
    assert b_band["x1"] == pytest.approx(share.get("A", 0) + share.get("B", 0))
    x, y = fig.data[0]["x"], fig.data[0]["y"]
    assert x[0] == 0 and y[0] == 0 and all(np.diff(x) > 0) and all(np.diff(y) >= 0)
    # by hand: the positive values sorted best first, cumulated, over the net total
    m = np.sort(customers["monetary"].to_numpy())[::-1]
    pos = m[m > 0]
    want = np.minimum(np.cumsum(pos) / m.sum(), 1.0)
    assert y[1:] == pytest.approx(np.round(want, 6).tolist(), abs=1e-6)
    assert x[-1] == pytest.approx(len(pos) / n, abs=1e-6)
    if fig.layout["shapes"][2:]:  # share mode: the cut-offs drawn where they are
        assert [s["y0"] for s in fig.layout["shapes"][2:]] == [ABC.resolve(params)["a"], ABC.resolve(params)["b"]]
    assert ("capped at 100%" in fig.caption) == (np.cumsum(pos)[-1] > m.sum())


def test_the_curve_is_thinned_at_many_customers():
    customers = pl.DataFrame({"customer_id": range(20_000), "monetary": np.arange(1, 20_001, dtype=float)})
    fig, _ = chart(customers)
    assert len(fig.data[0]["x"]) <= CURVE_POINTS + 1
    assert fig.data[0]["y"][-1] == pytest.approx(1.0)
