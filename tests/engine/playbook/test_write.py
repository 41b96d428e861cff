"""engine.playbook.write: the customers file's action columns."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.playbook import write
from engine.playbook.write import with_actions

ACTIONS = ["call", "mail", "visit"]
RULES = ["r1", "r2", "r3"]


def joined(customers: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """The definition: each customer's one action and rule, as text, by a left join on the id."""
    per = actions.select("customer_id", pl.col("action").cast(pl.String),
                         pl.col("rule").cast(pl.String).alias("action_rule"))
    return customers.join(per, on="customer_id", how="left", maintain_order="left")


@settings(settings.get_profile("key"))
@given(st.lists(st.integers(-5, 40), unique=True, max_size=30), st.data(), st.booleans())
def test_one_action_each_equals_the_join(ids, data, text_ids):
    """With sorted ids (as the feature pass writes them) the actions are placed by position, not joined: the same
    table as the join, whatever order the actions come in, some customers without one, string ids too."""
    ids = sorted(str(i).zfill(3) for i in ids) if text_ids else sorted(ids)
    customers = pl.DataFrame({"customer_id": ids, "monetary": [float(i) for i in range(len(ids))]}).sort("customer_id")
    chosen = data.draw(st.permutations(ids)).copy()[:data.draw(st.integers(0, len(ids)))]
    picks = data.draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=len(chosen),
                               max_size=len(chosen)))
    actions = pl.DataFrame({"customer_id": pl.Series(chosen, dtype=customers.schema["customer_id"]),
                            "rule": pl.Series([RULES[r] for r, _ in picks], dtype=pl.Enum(RULES)),
                            "action": pl.Series([ACTIONS[a] for _, a in picks], dtype=pl.Enum(ACTIONS))})
    got = with_actions(customers, actions, one_per_customer=True)
    assert got.equals(joined(customers, actions))
    assert got.schema["action"] == pl.String and got.schema["action_rule"] == pl.String


def test_placed_by_position_only_when_that_is_exact():
    """The positions are used for sorted, non-null ids with Enum rule and action columns; a customer given two
    actions is refused as the join refuses it, an action of an id not in the table is left out as the join
    leaves it out, and unsorted ids are joined."""
    customers = pl.DataFrame({"customer_id": [1, 4, 6, 9], "monetary": [1.0, 2.0, 3.0, 4.0]}).sort("customer_id")
    actions = pl.DataFrame({"customer_id": [9, 1], "rule": pl.Series(["r2", "r1"], dtype=pl.Enum(RULES)),
                            "action": pl.Series(["mail", "call"], dtype=pl.Enum(ACTIONS))})
    assert write._by_position(customers, actions) is not None
    assert with_actions(customers, actions, one_per_customer=True).rows() == [
        (1, 1.0, "call", "r1"), (4, 2.0, None, None), (6, 3.0, None, None), (9, 4.0, "mail", "r2")]
    twice = pl.concat([actions, actions.head(1)])
    assert write._by_position(customers, twice) is None
    with pytest.raises(pl.exceptions.ComputeError):
        with_actions(customers, twice, one_per_customer=True)
    stranger = pl.concat([actions, actions.head(1).with_columns(pl.lit(5, pl.Int64).alias("customer_id"))])
    assert write._by_position(customers, stranger) is None
    assert with_actions(customers, stranger, one_per_customer=True).equals(joined(customers, stranger))
    doubled = pl.concat([customers, customers.tail(1)]).sort("customer_id")  # the join refuses it (1:1)
    assert write._by_position(doubled, actions) is None
    unsorted = customers.reverse()
    assert write._by_position(unsorted, actions) is None
    assert with_actions(unsorted, actions, one_per_customer=True).equals(joined(unsorted, actions))
