"""plugins/abc/workbench.py: the fast path equals the classifier, the Pareto chart stays within 0..1."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from engine.fastpath import Table, check_fast_path
from plugins.abc import ABC
from plugins.abc.workbench import AbcFastPath, pareto_png

AS_OF = dt.date(2024, 1, 1)


def table(values) -> pl.DataFrame:
    return pl.DataFrame({"customer_id": range(len(values)), "monetary": values, "frequency": [1] * len(values)},
                        schema_overrides={"monetary": pl.Float64})


def test_the_fast_path_equals_the_expressions_with_ties_returns_and_both_modes():
    rng = np.random.default_rng(7)
    values = np.round(rng.choice([5.0, 10.0, 20.0, 80.0], 400) * rng.integers(-1, 4, 400), 0).tolist()
    moves = [{}, {"a": 0.3, "b": 0.31}, {"a": 0.99, "b": 1.0}, {"mode": "rank", "a_rank": 0.05, "b_rank": 0.9},
             {"metric": "frequency"}, {"crossing": "upper"}, {"crossing": "upper", "a": 0.3, "b": 0.31},
             {"crossing": "upper", "mode": "rank", "a_rank": 0.05, "b_rank": 0.9}, {"crossing": "upper", "a": 0.01},
             {"a": 0.01, "b": 0.02}]
    check_fast_path(ABC, table(values), moves, as_of=AS_OF)
    assert all(AbcFastPath(ABC, Table.of(table(values), AS_OF)).supports(ABC.resolve(m)) for m in moves)


def test_a_parameter_it_does_not_know_is_declined():
    fast = AbcFastPath(ABC, Table.of(table([1.0, 2.0]), AS_OF))
    assert not fast.supports({**ABC.resolve(), "some_new_option": True})


def test_the_pareto_curve_stays_within_0_and_1_when_returns_lower_the_total():
    # positive values sum to 150, the net total is 100: the cumulative share reaches 1.5 unclipped
    fast = AbcFastPath(ABC, Table.of(table([100.0, 50.0, -50.0]), AS_OF))
    data = fast.pareto_data(ABC.resolve())
    assert data["y"].max() <= 1.0 and data["y"].min() >= 0.0 and data["over"]
    assert fast.sorted("monetary").cum_share[-1] == 1.5  # the cut-offs still use the net total
    assert pareto_png(data)[:4] == b"\x89PNG"
    plain = AbcFastPath(ABC, Table.of(table([100.0, 50.0]), AS_OF)).pareto_data(ABC.resolve())
    assert plain["y"][-1] == 1.0 and not plain["over"]


def test_the_chart_key_follows_what_the_chart_shows():
    fast = AbcFastPath(ABC, Table.of(table([50.0, 30.0, 30.0, 10.0, 5.0, 5.0]), AS_OF))
    p = ABC.resolve()
    (chart,) = fast.charts(p)
    assert chart.name == "pareto" and chart.draw()[:4] == b"\x89PNG"
    assert fast.charts(ABC.resolve({"a": 0.81}))[0].key != chart.key  # the cut-off line moved
    assert fast.charts(ABC.resolve({"a_rank": 0.3}))[0].key == chart.key  # rank cut-offs are not drawn in share mode


def test_the_fast_path_equals_the_expressions_when_one_customer_dominates():
    # issue 10, item 7: one customer above a (A was empty); a single customer; all equal; a negative total
    for values in ([900.0, 50.0, 30.0, 20.0], [100.0], [5.0, 5.0, 5.0], [10.0, -20.0, 3.0], [96.0, 3.0, 1.0]):
        moves = [{}, {"crossing": "upper"}, {"mode": "rank"}, {"mode": "rank", "crossing": "upper"},
                 {"a": 0.5, "b": 0.6, "crossing": "upper"}]
        check_fast_path(ABC, table(values), moves, as_of=AS_OF)


def test_the_kept_pareto_figure_draws_what_a_new_one_draws():
    """The chart's figure is kept across moves (only the cut-offs are drawn again): nothing of an earlier
    move stays in the picture, and each picture is the one a figure made for it alone shows."""
    rng = np.random.default_rng(3)
    fast = AbcFastPath(ABC, Table.of(table(np.round(rng.lognormal(3, 1, 300), 2).tolist()), AS_OF))
    moves = [ABC.resolve(), ABC.resolve({"a": 0.5, "b": 0.7}), ABC.resolve({"mode": "rank", "a_rank": 0.1}),
             ABC.resolve({"a": 0.5, "b": 0.7})]
    pictures = [fast.charts(p)[0].draw() for p in moves]
    assert [pictures[i] == pareto_png(fast.pareto_data(p)) for i, p in enumerate(moves)] == [True] * 4
    assert pictures[1] == pictures[3] and pictures[0] != pictures[1] != pictures[2]
    assert fast.pareto_plot(moves[1]) is fast.pareto_plot(moves[3])  # one figure for the metric and mode
