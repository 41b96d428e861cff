"""Playbooks: which classifiers, which thresholds, which rules turn classes into actions.

A playbook is a YAML file (see ``docs/playbooks.md`` and ``tierbook schema``)::

    name: abc-resource-allocation
    data:
      transactions: ../data/sales.parquet     # relative to this file
      map: {customer_id: CustomerID, order_date: InvoiceDate, amount: Amount}
    classifiers:
      abc: {a: 0.8, b: 0.95}
    hit_policy: first
    rules:
      - name: key-accounts          # serves: A customers get a senior account manager
        when: abc = 'A'
        action: key-account-review
        channel: phone
        owner: key-accounts
        due_days: 3
        priority: 1
        capacity: {max: 50, order_by: monetary desc}
    outputs:
      dir: out/abc

Everything is validated before any transaction is read, and every problem is
reported at once as ``file:line: message``.

The package's modules each do one job: :mod:`~engine.playbook.spec` (the keys a playbook may hold, the
bounds, the :class:`Rule` and :class:`Result` records), :mod:`~engine.playbook.load` (loading and
validation), :mod:`~engine.playbook.model` (the :class:`Playbook`), :mod:`~engine.playbook.evaluate`
(rule evaluation, :func:`evaluate_rules`, and the reconciliation), :mod:`~engine.playbook.write` (the outputs as one set),
:mod:`~engine.playbook.save` (tuned parameters back into the file), :mod:`~engine.playbook.schema` (the
JSON Schema), :mod:`~engine.playbook.explain` (one customer explained) and :mod:`~engine.playbook.live`
(the workbench's rule counts, move after move, equal to :func:`evaluate_rules`').
"""

from __future__ import annotations

from .evaluate import RuleResult, check_reconciliation, evaluate_rules, label_sets, reconcile
from .explain import explain_customer
from .load import PLUGIN_MODULES_ENV, allowed_plugin_modules, load_playbook
from .model import Playbook
from .schema import playbook_schema
from .spec import FEATURE_DTYPES, Result, Rule

__all__ = ["Playbook", "Rule", "Result", "load_playbook", "playbook_schema", "FEATURE_DTYPES", "explain_customer",
           "evaluate_rules", "RuleResult", "label_sets", "allowed_plugin_modules", "PLUGIN_MODULES_ENV", "reconcile",
           "check_reconciliation"]
