"""Print docs/features.md, the table of built-in features (engine/feature_table.py).

    python tools/features_table.py > docs/features.md

tests/engine/test_feature_table.py checks that the file is current, so the docs
never drift from the table the feature passes are built from.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.feature_table import markdown_table  # noqa: E402

HEADER = """# Built-in features

Generated from `engine/feature_table.py` by `python tools/features_table.py > docs/features.md`; a
test fails when this file is not current. That table is the one definition of every built-in
feature: the Polars feature pass, the Spark feature pass (`engine: spark`), the schema a playbook
is validated against and `tierbook plugins` are all built from it.

Every feature is computed per customer over the customer's *usable* rows (a customer id, a date and
an amount, dated before `as_of`). A purchase is a line with a positive amount, a return a line with
a negative one; amounts are summed exactly, in units of 0.0001. `as_of` defaults to the day after
the last dated row with an amount. A customer of the customer table without any usable row (a
prospect) has 0 for `frequency`, `monetary`, `returns` and `returned_value` and null for the rest.
Plugins add features of their own (`register_features`, see docs/plugins.md).

**How `frequency` is counted.** Counting distinct order ids per customer means hashing every
(customer, order id) pair. Transaction logs are almost always written order by order with order ids
that grow (as shops number their invoices); on such input the Polars pass counts a customer's orders as
the places where the (order id, customer) of the purchase lines changes, and proves in the same pass
that this is exact: a change is *fresh* when its order id is larger than every order id of the purchase
lines before it; a customer any of whose changes is not fresh (an order split in two places, an order id
shared by two customers, ids out of sequence) is counted again by hashing, reading only that customer's
purchase lines. Before the pass, the first 10,000 rows decide which way to try: when more than 1% of
their changes are not fresh (a shuffled file, ids not in sequence), the pass hashes from the start. The
numbers are the same either way (property tests compare both on inputs broken every way). The run says
which way counted: `orders counted by order boundaries: ...` or `orders counted by hashing: ...` on
stderr, and `input.orders_counted` (`boundaries` or `hashing`), `input.orders_check` (why) and
`input.orders_recounted` (customers counted again) in `summary.json`. Snapshots of all history count
the same way per bucket (docs/time.md); snapshots with a lookback window and the Spark pass always hash. Decision record: docs/decisions/0017-ordered-input-order-count.md.
With integer customer ids (and integer or date order ids, no plugin `agg` feature), the ordered pass keeps each
customer's aggregates in arrays indexed by the id instead of a `group_by`, which hashes them: the same
table, in about two thirds of the CPU time and memory (docs/decisions/0019-dense-ordered-pass.md). On input
not written order by order, integer order ids are counted the same way as positions of an array holding each
order's customer (`orders counted by order ids as array positions`, `input.orders_counted` `positions`); a
customer with a purchase line on an order id another customer's line took first is counted again by hashing.
"""


def render() -> str:
    return HEADER + "\n" + markdown_table() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
