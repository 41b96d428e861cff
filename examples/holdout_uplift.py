"""A worked example of holdouts and ``tierbook measure``, on synthetic data with a planted effect.

Everything here is generated (seeded, so every run prints the same numbers); no real customer is in it:

1. a year of purchase history for ``--customers`` customers (2025), as_of 2026-01-01;
2. a playbook with two rules that split the customers by recency, each holding out 20% of its customers:
   ``win-back`` (no purchase for more than 90 days: a win-back offer) and ``newsletter`` (the others);
3. ``tierbook run`` assigns the groups (actions.csv, control.csv);
4. January 2026's transactions are drawn from the groups as written: a ``win-back`` customer who got the
   offer buys with probability 15% against 10% for one held out (a planted uplift of +5 percentage points);
   a ``newsletter`` customer buys with probability 30% in either group (no effect). Basket sizes are drawn
   from one log-normal distribution for everyone;
5. ``tierbook measure`` then finds the first effect and not the second.

    python examples/holdout_uplift.py [--customers 20000] [--seed 17] [--dir DIR]

tests/examples/test_holdout_uplift.py runs it and checks what measure finds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

AS_OF = dt.date(2026, 1, 1)
PERIOD = (dt.date(2026, 1, 1), dt.date(2026, 1, 31))
#: Probability of buying in January, by rule and group: the planted effect is win-back's.
BUY = {("win-back", "treatment"): 0.15, ("win-back", "control"): 0.10,
       ("newsletter", "treatment"): 0.30, ("newsletter", "control"): 0.30}

PLAYBOOK = """\
# Synthetic (examples/holdout_uplift.py): two rules, each holding out 20% of its customers.
name: holdout-example
data:
  transactions: history.csv
  as_of: 2026-01-01
classifiers:
  abc: {}
rules:
  - name: win-back
    when: recency_days > 90
    action: win-back-offer
    channel: email
    owner: crm
    holdout: {share: 0.2, salt: win-back-2026-01}
  - name: newsletter
    when: recency_days <= 90
    action: newsletter
    channel: email
    owner: crm
    holdout: {share: 0.2, salt: newsletter-2026-01}
outputs:
  dir: out
"""


def history(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """2025's purchases: 1 to 6 orders per customer on random days, log-normal amounts."""
    orders = rng.integers(1, 7, n)
    ids = np.repeat(np.arange(100_001, 100_001 + n), orders)
    days = rng.integers(0, 365, ids.size)
    return pl.DataFrame({
        "customer_id": ids,
        "order_id": [f"h{i}" for i in range(ids.size)],
        "order_date": [dt.date(2025, 1, 1) + dt.timedelta(days=int(d)) for d in days],
        "amount": np.round(rng.lognormal(3.5, 0.6, ids.size), 2),
    })


def outcomes(groups: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """January's purchases, drawn from each customer's rule and group (the planted effect is in BUY)."""
    p = groups.select(pl.struct("rule", "group").map_elements(lambda r: BUY[(r["rule"], r["group"])],
                                                              return_dtype=pl.Float64)).to_series().to_numpy()
    buyers = groups.filter(pl.Series(rng.random(groups.height) < p))
    days = rng.integers(0, 31, buyers.height)
    return pl.DataFrame({
        "customer_id": buyers["customer_id"],
        "order_id": [f"o{i}" for i in range(buyers.height)],
        "order_date": [PERIOD[0] + dt.timedelta(days=int(d)) for d in days],
        "amount": np.round(rng.lognormal(3.5, 0.6, buyers.height), 2),
    })


def run(directory: Path, customers: int = 20_000, seed: int = 17) -> dict:
    """Generate, run the playbook, draw the outcomes, measure: the measurement (``engine.measure.measure``)."""
    from engine.measure import measure
    from engine.playbook import load_playbook

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    history(customers, rng).write_csv(directory / "history.csv")
    (directory / "playbook.yaml").write_text(PLAYBOOK)
    pb = load_playbook(directory / "playbook.yaml")
    pb.run()
    out = pb.output_dir
    groups = pl.concat([
        pl.read_csv(out / "actions.csv").select("customer_id", "rule", pl.lit("treatment").alias("group")),
        pl.read_csv(out / "control.csv").select("customer_id", "rule", "group"),
    ])
    outcomes(groups, rng).write_csv(directory / "outcomes.csv")
    return measure(pb, directory / "outcomes.csv", start=PERIOD[0], end=PERIOD[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--dir", type=Path, help="where to write the data and outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    from engine.measure import format_measurement

    if args.dir is not None:
        print(format_measurement(run(args.dir, args.customers, args.seed)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print(format_measurement(run(Path(tmp), args.customers, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
