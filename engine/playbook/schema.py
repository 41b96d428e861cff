"""The JSON Schema of playbooks (``tierbook schema``), from the same key tables as validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data import CANONICAL
from ..features import ORDER_PATHS
from ..registry import Registry, get_registry
from .spec import (
    ACTION_KEYS,
    DATA_KEYS,
    FALLBACK_KEYS,
    HIT_POLICIES,
    MAX_DUE_DAYS,
    MAX_PRIORITY,
    MAX_SALT_CHARS,
    OUTPUT_KEYS,
    SNAPSHOT_KEYS,
    SPARK_KEYS,
    TOP_KEYS,
)


def playbook_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of playbooks, installed classifiers' parameters included."""
    registry = registry or get_registry()

    def props(keys: Mapping[str, tuple[str, bool, str]]) -> dict[str, Any]:
        kinds = {"str": {"type": "string", "minLength": 1}, "int": {"type": "integer"},
                 "mapping": {"type": "object"}, "list": {"type": "array"}, "date": {"type": "string",
                 "format": "date"}, "any": {}, "bool": {"type": "boolean"}}
        return {k: {**kinds[kind], "description": desc} for k, (kind, _, desc) in keys.items()}

    def obj(keys, **extra) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "properties": {**props(keys), **extra},
                "required": [k for k, (_, req, _) in keys.items() if req]}

    action = obj(ACTION_KEYS)
    action["properties"]["due_days"].update(minimum=0, maximum=MAX_DUE_DAYS)
    action["properties"]["priority"].update(minimum=1, maximum=MAX_PRIORITY)
    action["properties"]["capacity"] = {
        "description": ACTION_KEYS["capacity"][2],
        "oneOf": [{"type": "integer", "minimum": 1},
                  {"type": "object", "additionalProperties": False, "required": ["max"],
                   "properties": {"max": {"type": "integer", "minimum": 1},
                                  "order_by": {"type": "string", "pattern": r"^\S+(\s+(asc|desc|ASC|DESC))?$"}}}],
    }
    holdout = {"type": "object", "additionalProperties": False, "required": ["share", "salt"],
               "properties": {"share": {"type": "number", "minimum": 0, "maximum": 1,
                                        "description": "Share of the customers held out, a multiple of 0.0001 "
                                                       "(10,000 buckets)."},
                              "salt": {"type": "string", "minLength": 1, "maxLength": MAX_SALT_CHARS,
                                       "pattern": "^[^\\u0000]+$",
                                       "description": "Names the draw: the same salt holds out the same customers, "
                                                      "a new one draws anew."}}}
    action["properties"]["holdout"] = {**holdout, "description": ACTION_KEYS["holdout"][2]}
    classifiers = {
        name: {"type": ["object", "null"], "additionalProperties": False, "description": c.description,
               "properties": {p.name: p.json_schema() for p in c.params}}
        for name, c in sorted(registry.classifiers.items())
    }
    data = obj(DATA_KEYS)
    data["properties"]["map"] = {"type": "object", "description": DATA_KEYS["map"][2],
                                 "propertyNames": {"enum": list(CANONICAL)},
                                 "additionalProperties": {"type": "string"}}
    top = obj(TOP_KEYS)
    top["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    top["title"] = "tierbook playbook"
    top["properties"].update({
        "data": data,
        "plugins": {"type": "array", "items": {"type": "string"}, "description": TOP_KEYS["plugins"][2]},
        "classifiers": {"type": "object", "additionalProperties": False, "minProperties": 1,
                        "properties": classifiers, "description": TOP_KEYS["classifiers"][2]},
        "hit_policy": {"enum": list(HIT_POLICIES), "default": "first", "description": TOP_KEYS["hit_policy"][2]},
        "rules": {"type": "array", "items": action, "description": TOP_KEYS["rules"][2]},
        "fallback": obj(FALLBACK_KEYS),
        "outputs": obj(OUTPUT_KEYS),
        "engine": {"enum": ["polars", "spark"], "default": "polars", "description": TOP_KEYS["engine"][2]},
        "spark": obj(SPARK_KEYS),
        "holdout": {**holdout, "description": TOP_KEYS["holdout"][2]},
        "snapshots": obj(SNAPSHOT_KEYS, as_of={"type": "array", "items": {"type": "string", "format": "date"},
                                               "description": SNAPSHOT_KEYS["as_of"][2]},
                         every={"type": ["string", "integer"], "description": SNAPSHOT_KEYS["every"][2]},
                         periods={"type": "integer", "minimum": 1, "maximum": 1000,
                                  "description": SNAPSHOT_KEYS["periods"][2]},
                         window={"type": "object", "additionalProperties": {"type": ["string", "integer"]},
                                 "description": SNAPSHOT_KEYS["window"][2]},
                         cohort={"enum": ["month", "quarter"], "default": "month",
                                 "description": SNAPSHOT_KEYS["cohort"][2]}),
    })
    top["properties"]["fallback"]["properties"]["holdout"] = {**holdout, "description": ACTION_KEYS["holdout"][2]}
    return top


def summary_schema() -> dict[str, Any]:
    """The JSON Schema of a run's ``summary.json`` (``tierbook schema --summary``).

    The keys listed are required and keep their names; a summary may hold more (``fits``, ``skipped_rules``
    ... and keys later versions add), so scripts reading it stay valid.
    """
    count = {"type": "integer", "minimum": 0}
    text = {"type": "string"}
    nullable_text = {"type": ["string", "null"]}
    source = {"type": "object", "required": ["path", "size", "mtime", "rows", "fingerprint"], "properties": {
        "path": text, "size": count, "mtime": nullable_text, "rows": {"type": ["integer", "null"], "minimum": 0},
        "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "files": count}}
    output = {"type": "object", "required": ["size", "sha256"],
              "properties": {"size": count, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}
    manifest = {
        "type": "object",
        "description": "What ran, on what, with which parameters, how long (engine/playbook/manifest.py).",
        "required": ["tierbook", "python", "polars", "plugins", "playbook", "data", "fingerprint_method", "as_of",
                     "as_of_from", "parameters", "durations_s", "outputs"],
        "properties": {
            "tierbook": nullable_text, "python": text, "polars": text,
            "plugins": {"type": "array", "items": {"type": "object", "required": ["name", "package", "version",
                                                                                  "source", "classifiers"]}},
            "playbook": {"type": "object", "required": ["path", "name", "sha256"],
                         "properties": {"path": text, "name": text,
                                        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
            "data": {"type": "object", "required": ["transactions"],
                     "properties": {"transactions": source, "customers": source}},
            "fingerprint_method": text,
            "as_of": {"type": "string", "format": "date"},
            "as_of_from": {"enum": ["given", "data.as_of", "the day after the last transaction", "snapshots"]},
            "parameters": {"type": "object", "required": ["classifiers", "overrides", "hit_policy", "engine", "data",
                                                          "outputs"]},
            "durations_s": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
            "outputs": {"type": "object", "additionalProperties": output},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tierbook run summary (summary.json)",
        "type": "object",
        "required": ["playbook", "as_of", "hit_policy", "input", "reconciliation", "classes", "rules", "unmatched",
                     "cut_by_capacity", "actions", "manifest"],
        "properties": {
            "playbook": text,
            "as_of": {"type": "string", "format": "date"},
            "hit_policy": {"enum": list(HIT_POLICIES)},
            "input": {"type": "object", "required": ["source", "rows", "rows_used", "rejected", "customers",
                                                     "orders_counted", "orders_check", "orders_recounted"],
                      "properties": {
                          "orders_counted": {"enum": list(ORDER_PATHS),
                                             "description": "how the pass counted each customer's distinct "
                                                            "orders: from order boundaries (input written order by "
                                                            "order, checked in the same pass) or by hashing"},
                          "orders_check": {"type": "string",
                                           "description": "why that way: what the check found, or why it did "
                                                          "not run"},
                          "orders_recounted": {"type": "integer", "minimum": 0,
                                               "description": "customers with an order out of place, counted "
                                                              "again by hashing"}}},
            "reconciliation": {"type": "object", "required": ["customers_in", "customers_out", "revenue_in",
                                                              "revenue_out", "ok"]},
            "classes": {"type": "array"},
            "rules": {"type": "array", "items": {"type": "object", "required": ["rule", "matched", "hits",
                                                                                "cut_by_capacity", "actions"]}},
            "unmatched": count,
            "cut_by_capacity": count,
            "actions": count,
            "manifest": manifest,
        },
        "additionalProperties": True,
    }
