"""Baseline: DuckDB SQL, the same features and classification as tierbook.

    python bench/baseline_duckdb.py DATA.parquet OUT.parquet

One SQL statement over the Parquet file: a GROUP BY for dates, revenue and
distinct orders with a positive line, then window functions for ABC
(cumulative revenue share over a RANGE frame, so a tie group shares its share),
lifecycle (ADC) and RFM quintile scores with the named segments and value
tiers, using tierbook's definitions (see bench/README.md). COPY writes one row
per customer to OUT.
"""

import sys

import duckdb

GRID = {
    "Champions": ["54", "55", "45"], "Loyal Customers": ["44", "34", "35"],
    "Potential Loyalists": ["52", "53", "42", "43"], "New Customers": ["51"], "Promising": ["41"],
    "Need Attention": ["33"], "About to Sleep": ["31", "32"], "At Risk": ["23", "24", "13", "14"],
    "Can't Lose Them": ["25", "15"], "Hibernating": ["21", "22"], "Lost": ["11", "12"],
}


def sql(data: str, out: str) -> str:
    cases = "\n".join(
        f"      WHEN rfm_r * 10 + (rfm_f + rfm_m + 1) // 2 IN ({', '.join(cells)}) THEN '{name.replace(chr(39), chr(39) * 2)}'"
        for name, cells in GRID.items())
    return f"""
COPY (
  WITH tx AS (SELECT customer_id, order_id, order_date, amount FROM read_parquet('{data}')),
  as_of AS (SELECT max(order_date) + 1 AS d FROM tx),
  agg AS (
    SELECT customer_id,
           min(order_date) FILTER (WHERE amount > 0) AS first_order,  -- purchases only
           max(order_date) FILTER (WHERE amount > 0) AS last_order,
           count(DISTINCT order_id) FILTER (WHERE amount > 0) AS frequency,
           round(sum(amount), 2) AS monetary
    FROM tx GROUP BY customer_id
  ),
  feat AS (
    SELECT agg.*, (as_of.d - last_order) AS recency_days, (as_of.d - first_order) AS tenure_days
    FROM agg, as_of
  ),
  scored AS (
    SELECT *,
      sum(greatest(monetary, 0)) OVER (ORDER BY monetary DESC
          RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) / sum(monetary) OVER () AS abc_share,
      sum(monetary) OVER () AS total,
      CAST((rank() OVER (ORDER BY recency_days DESC) - 1) * 5 // count(*) OVER () + 1 AS TINYINT) AS rfm_r,
      CAST((rank() OVER (ORDER BY frequency) - 1) * 5 // count(*) OVER () + 1 AS TINYINT) AS rfm_f,
      CAST((rank() OVER (ORDER BY monetary) - 1) * 5 // count(*) OVER () + 1 AS TINYINT) AS rfm_m
    FROM feat
  )
  SELECT customer_id, first_order, last_order, frequency, monetary, recency_days, tenure_days,
    CASE WHEN monetary > 0 AND total > 0 AND abc_share <= 0.8 + 1e-12 THEN 'A'
         WHEN monetary > 0 AND total > 0 AND abc_share <= 0.95 + 1e-12 THEN 'B' ELSE 'C' END AS abc,
    CASE WHEN tenure_days <= 30 THEN 'new' WHEN recency_days <= 90 THEN 'active'
         WHEN recency_days <= 365 THEN 'dormant' ELSE 'churned' END AS adc,
    rfm_r, rfm_f, rfm_m,
    CASE
{cases}
    END AS rfm_segment,
    CASE WHEN rfm_r >= 3 AND rfm_f >= 4 AND rfm_m >= 4 THEN 'high-value'
         WHEN rfm_r + rfm_f + rfm_m >= 9 THEN 'potential' ELSE 'ordinary' END AS value_tier
  FROM scored
) TO '{out}' (FORMAT parquet)
"""


def main(data: str, out: str) -> None:
    duckdb.connect().execute(sql(data, out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
