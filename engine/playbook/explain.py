"""``tierbook explain``: why one customer got what they got."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ..errors import DataError
from ..run import Prepared
from ..terminal import safe_lines
from .spec import Result

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook


def explain_customer(pb: Playbook, prepared: Prepared, result: Result, customer_id: str) -> str:
    """Text explaining one customer: features, labels, every rule and which clause failed."""
    from ..rules import compile_rule

    customers = result.customers
    dtype = customers.schema["customer_id"]
    try:
        key = pl.Series([customer_id]).cast(dtype, strict=True)[0]
    except Exception:
        raise DataError(f"customer id {customer_id!r} is not a valid {dtype} id") from None
    row = customers.filter(pl.col("customer_id") == key)
    if row.height == 0:
        ids = customers["customer_id"].cast(pl.String).head(5).to_list()
        raise DataError(f"no customer {customer_id!r} in {pb.data.get('transactions')} "
                        f"(ids look like: {', '.join(ids)})")
    lines = [f"customer {customer_id} (as of {result.as_of})", "", "features and labels:"]
    for col, value in row.row(0, named=True).items():
        if col != "customer_id":
            lines.append(f"  {col:<18} {value}")
    labels = {o.column: o.labels for s in pb.selections for o in s.outputs if o.labels is not None}
    lines += ["", f"rules (hit policy: {pb.hit_policy}):"]
    got = result.actions.filter(pl.col("customer_id") == key)
    cut = result.cut.filter(pl.col("customer_id") == key)
    for rule in pb.rules:
        compiled = compile_rule(rule.when, customers.schema, labels=labels, as_of=result.as_of)
        hit = bool(row.select(compiled.expr).item())
        status = "matched" if hit else "not matched"
        if hit and rule.name in got["rule"].to_list():
            status += f" -> {rule.action} via {rule.channel}, owner {rule.owner}"
        elif hit and rule.name in cut["rule"].to_list():
            status += " but cut by capacity"
        elif hit:
            status += " but an earlier rule took the customer (hit policy first)"
        lines.append(f"- {rule.name}: {status}")
        lines.extend(compiled.explain_lines(row))
    if pb.fallback is not None and pb.fallback.name in got["rule"].to_list():
        lines.append(f"- {pb.fallback.name} (fallback): {pb.fallback.action} via {pb.fallback.channel}")
    return safe_lines(lines)  # values and names from the data, each line kept one line
