"""Loading and validation: a playbook file to a :class:`~engine.playbook.model.Playbook`, every
problem reported at once as ``file:line: message``, before any transaction is read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from ..data import CANONICAL, as_date, check_delimiter, read_customers, read_transactions
from ..errors import (
    PLAYBOOK_WORDS,
    DataError,
    ParamError,
    PlaybookError,
    PluginError,
    Problem,
    TierbookError,
    option,
    speaking,
    suggest,
)
from ..features import BUILTIN_FEATURES, PLUGIN_ROW_COLUMNS
from ..holdout import BUCKETS, Holdout
from ..io import OUTPUT_FORMATS
from ..registry import Registry, get_registry
from ..run import Selection, split_params
from ..yamlio import MarkedDict, MarkedList, load_marked
from .evaluate import _late_due_dates, label_sets
from .expect import check_cases, parse_cases
from .model import Playbook
from .write import JOIN
from .spec import (
    ACTION_KEYS,
    DATA_KEYS,
    DEFAULT_DUE_DAYS,
    FALLBACK_KEYS,
    FEATURE_DTYPES,
    HIT_POLICIES,
    HOLDOUT_KEYS,
    MAX_SALT_CHARS,
    MAX_DUE_DAYS,
    MAX_PARAMS_CHARS,
    MAX_PRIORITY,
    OUTPUT_DEFAULTS,
    OUTPUT_KEYS,
    Rule,
    SPARK_KEYS,
    TOP_KEYS,
)


class _Problems:
    """Collects ``file:line: message`` problems; raises them all together."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))

    def raise_if_any(self) -> None:
        if self.items:
            seen, out = set(), []
            for line, msg in sorted(self.items, key=lambda x: x[0]):
                problem = Problem(self.path, line, msg)
                if problem not in seen:
                    seen.add(problem)
                    out.append(problem)
            raise PlaybookError(out)


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str) and value.strip() != ""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "mapping":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    if kind == "date":
        return isinstance(value, (dt.date, str))
    if kind == "bool":
        return isinstance(value, bool)
    return True


_KIND_NAMES = {"str": "non-empty text", "int": "a whole number", "mapping": "a mapping", "list": "a list",
               "date": "a date YYYY-MM-DD", "any": "a value", "bool": "true or false"}


def _short(value: Any) -> str:
    """``repr`` of a value from the playbook, cut short (a message never echoes a whole document)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = 80, 80, 6, 6, 3
    return r.repr(value)


def _check_keys(node: MarkedDict, keys: Mapping[str, tuple[str, bool, str]], what: str, problems: _Problems) -> bool:
    """Unknown keys, missing required keys and wrong kinds. Returns False if the node is unusable."""
    ok = True
    meant = set()  # required keys that an unknown key is a near miss of: report only the typo
    for key in node:
        if key not in keys:
            hint = suggest(str(key), keys)
            problems.add(node.key_line(key), f"{what}: unknown key {key!r}{hint} (known: {', '.join(keys)})")
            if hint:
                meant.add(hint.split("'")[1])
            ok = False
    for key, (kind, required, _) in keys.items():
        if key not in node:
            if required and key not in meant:
                problems.add(node.line, f"{what}: missing required key {key!r}")
                ok = False
        elif not _kind_ok(kind, node[key]):
            problems.add(node.value_line(key), f"{what}: {key!r} must be {_KIND_NAMES[kind]}, got {_short(node[key])}")
            ok = False
    return ok


def load_playbook(
    path: str | Path,
    *,
    registry: Registry | None = None,
    params: Any = None,
    output_dir: str | Path | None = None,
    allow_outside: bool = False,
    check_data: bool = True,
    skip_failing_plugins: bool = False,
    plugins_dir: str | Path | None = None,
    snapshots: Mapping[str, Any] | None = None,
    engine: str | None = None,
    spark: Mapping[str, Any] | None = None,
) -> Playbook:
    """Load and validate a playbook; raise :class:`PlaybookError` listing every problem.

    ``params`` (``["abc.a=0.7"]`` or a mapping) override the playbook's values;
    ``output_dir`` overrides ``outputs.dir``. With ``check_data`` the data
    files' headers (not their rows) are read to check the column mapping and
    the columns rules use. With ``skip_failing_plugins`` a plugin that fails to
    load is recorded in ``registry.failures`` instead of stopping.
    ``plugins_dir`` also loads the local plugins of that directory (see
    :func:`~engine.registry.get_registry`). ``snapshots`` (keys as in the
    playbook's ``snapshots:``, e.g. from ``--snapshots`` / ``--every``) replaces
    the playbook's dates; its ``window`` and ``cohort`` are added to the playbook's. ``engine`` (e.g. from
    ``--engine``) replaces the playbook's ``engine:``; ``spark`` (``master``, ``config``) replaces its
    ``spark.master`` and adds to its ``spark.config``.
    """
    path = Path(path)
    doc = load_marked(path)
    try:  # the text this playbook was loaded from, for the run's manifest
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = ""
    problems = _Problems(path)
    if doc is None:
        problems.add(1, "the playbook is empty; it needs at least name, data and classifiers")
        problems.raise_if_any()
    if not isinstance(doc, MarkedDict):
        problems.add(getattr(doc, "line", 1) or 1, "a playbook is a mapping with name, data, classifiers, rules")
        problems.raise_if_any()
    _check_keys(doc, TOP_KEYS, "playbook", problems)
    base = path.resolve().parent

    # plugins and registry
    plugin_modules = [str(m) for m in doc.get("plugins") or []] if isinstance(doc.get("plugins"), list) else []
    _check_plugin_modules(doc, plugin_modules, problems)
    problems.raise_if_any()  # before anything is imported
    if registry is None:
        try:
            registry = get_registry(modules=plugin_modules, strict=not skip_failing_plugins, plugins_dir=plugins_dir)
        except PluginError as exc:
            problems.add(doc.value_line("plugins") if "plugins" in doc else 1, str(exc))
            problems.raise_if_any()
    elif plugin_modules:
        registry = get_registry(modules=plugin_modules, strict=not skip_failing_plugins, plugins_dir=plugins_dir)

    engine, spark = _load_engine(doc, problems, engine, spark)
    data = _load_data(doc, base, problems, engine)
    selections, raw_params = _load_classifiers(doc, registry, params, problems)
    hit_policy = doc.get("hit_policy", "first")
    if "hit_policy" in doc and hit_policy not in HIT_POLICIES:
        problems.add(doc.value_line("hit_policy"), f"hit_policy: {hit_policy!r} is not one of first, all"
                                                   f"{suggest(str(hit_policy), HIT_POLICIES)}")
    rules = _load_rules(doc, problems)
    snaps = _load_snapshots(doc, data, selections, snapshots, problems)
    _check_previous(rules, selections, snaps, problems)
    fallback = _load_fallback(doc, problems, len(rules))
    holdout = _load_holdout(doc, "holdout", problems)
    cases = parse_cases(doc.get("expect"), problems.add)
    _check_fallback_name(doc, rules, fallback, problems)
    _check_joinable(doc, hit_policy, problems)
    if isinstance(data.get("as_of"), dt.date):
        for line, message in _late_due_dates([*rules, *([fallback] if fallback else [])], data["as_of"]):
            problems.add(line, message)
    outputs = _load_outputs(doc, base, path, output_dir, allow_outside, problems)
    _check_outputs_spare_inputs(doc, path, data, outputs, problems)
    problems.raise_if_any()

    table = None
    schema: dict[str, pl.DataType] = {}
    if check_data:
        with speaking(PLAYBOOK_WORDS):
            schema, table = _predicted_schema(doc, data, registry, selections, problems, engine)
        problems.raise_if_any()
        _check_requires(doc, registry, selections, schema, problems)
        problems.raise_if_any()
        if snaps is not None and snaps["count"] >= 2:  # rules may read the previous snapshot's labels
            from ..migration import previous_columns

            schema.update({c: pl.Enum(list(labels)) for c, labels in previous_columns(selections).items()})
        _compile_rules(rules, fallback, schema, selections, data.get("as_of"), doc, problems)
        cases = check_cases(cases, schema, label_sets(selections), rules, fallback, hit_policy, problems.add)
        problems.raise_if_any()

    overrides = {name: {k: raw_params[name][k] for k in values}
                 for name, values in (split_params(params) if params else {}).items() if name in raw_params}
    return Playbook(
        path=path, name=doc["name"], description=doc.get("description", ""), data=data,
        classifier_params=raw_params, selections=selections, rules=rules, hit_policy=hit_policy,
        fallback=fallback, outputs=outputs, registry=registry, plugins=plugin_modules, customer_table=table,
        engine=engine, spark=spark, snapshots=snaps, holdout=holdout, overrides=overrides, expectations=cases,
        customer_schema=schema, sha256=digest,
    )


def _load_snapshots(doc: MarkedDict, data: dict[str, Any], selections: list[Selection],
                    override: Mapping[str, Any] | None, problems: _Problems) -> dict[str, Any] | None:
    """``snapshots:`` (and the command line's override), checked: the keys :func:`engine.snapshots.snapshot_spec`
    takes, with ``count`` (how many snapshots) and ``line``; None without snapshots."""
    from ..snapshots import snapshot_spec

    from .spec import SNAPSHOT_KEYS

    node = doc.get("snapshots")
    raw: dict[str, Any] = {}
    line = doc.value_line("snapshots") if "snapshots" in doc else 1
    if isinstance(node, MarkedDict):
        if not _check_keys(node, SNAPSHOT_KEYS, "snapshots", problems):
            return None
        raw = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in node.items()}
    words = PLAYBOOK_WORDS
    if override:
        override = dict(override)
        if "as_of" in override or "every" in override or "periods" in override or "end" in override:
            for k in ("as_of", "every", "periods", "end"):
                raw.pop(k, None)
            words = {}  # the dates come from the caller: messages name them as the caller does
        raw["window"] = {**raw.get("window", {}), **override.pop("window", {})}
        raw.update(override)
        line = 1
    raw = {k: v for k, v in raw.items() if v not in (None, {})}
    if not raw:
        return None
    names = {s.classifier.name for s in selections}
    for name in raw.get("window", {}):
        if name not in names:
            problems.add(line, f"snapshots.window: {name!r} is not a classifier of this playbook"
                               f"{suggest(str(name), names)} (classifiers: {', '.join(sorted(names))})")
            return None
    try:
        with speaking(words):
            snapshot_spec(as_of=raw.get("as_of"), every=raw.get("every"), periods=raw.get("periods"),
                          end=raw.get("end"), windows=raw.get("window"), cohort=raw.get("cohort"),
                          default_end=data.get("as_of") or dt.date(2000, 1, 1))
    except TierbookError as exc:
        problems.add(line, str(exc))
        return None
    raw["count"] = len(raw["as_of"]) if raw.get("as_of") is not None else raw["periods"]
    raw["line"] = line
    raw["words"] = "playbook" if words else "caller"
    return raw


def _check_previous(rules: list[Rule], selections: list[Selection], snaps: dict[str, Any] | None,
                    problems: _Problems) -> None:
    """A rule reading ``<label>_prev`` or ``<label>_change`` needs a previous snapshot: two snapshots or more."""
    import re

    from ..migration import previous_columns

    if snaps is not None and snaps["count"] >= 2:
        return
    columns = previous_columns(selections)
    for rule in rules:
        used = [w for w in dict.fromkeys(re.findall(r"[A-Za-z_]\w*", rule.when or "")) if w in columns]
        if used:
            if snaps is None:
                why = "the playbook has no snapshots (add e.g. snapshots: {every: quarter, periods: 2})"
            else:
                given = f"as_of: {', '.join(str(d) for d in snaps['as_of'])}" if snaps.get("as_of") is not None else f"periods: {snaps['periods']}"
                why = f"snapshots gives one snapshot ({given}); give two or more"
            problems.add(rule.when_line, f"rule {rule.name!r}: {used[0]} reads the previous snapshot, but {why}")


def _load_engine(doc: MarkedDict, problems: _Problems, override: str | None = None,
                 spark_override: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``engine:`` and its ``spark:`` settings, with the caller's (``--engine``, ``--spark-master``,
    ``--spark-conf``) over them."""
    from ..run import ENGINES

    engine = doc.get("engine", "polars")
    if engine not in ENGINES:
        problems.add(doc.value_line("engine"), f"engine: {engine!r} is not an engine{suggest(str(engine), ENGINES)} "
                                               f"(engines: {', '.join(ENGINES)})")
        engine = "polars"
    if override is not None:
        if override not in ENGINES:
            raise DataError(f"{option('engine')} {override!r}: use one of {', '.join(ENGINES)}")
        engine = override
    node = doc.get("spark")
    spark: dict[str, Any] = {}
    if isinstance(node, MarkedDict):
        if engine != "spark" and override is None:
            problems.add(doc.key_line("spark"), "spark: applies to engine: spark only")
        if _check_keys(node, SPARK_KEYS, "spark", problems):
            spark = {"master": str(node.get("master", "local[*]")),
                     "config": {str(k): str(v) for k, v in (node.get("config") or {}).items()}}
    if spark_override:
        if engine != "spark":
            raise DataError(f"{option('spark_master')} and {option('spark_conf')} apply to the spark engine only "
                            f"(engine: spark, or {option('engine')} spark)")
        spark = {"master": str(spark_override.get("master") or spark.get("master") or "local[*]"),
                 "config": {**spark.get("config", {}), **{str(k): str(v) for k, v in
                                                         (spark_override.get("config") or {}).items()}}}
    if engine != "spark":
        spark = {}
    return engine, spark


#: Modules a playbook's ``plugins:`` may name besides installed tierbook plugins (comma-separated).
PLUGIN_MODULES_ENV = "TIERBOOK_PLUGIN_MODULES"


def allowed_plugin_modules() -> dict[str, str]:
    """The modules a playbook may import, each with why: installed entry points of the ``tierbook``
    group (read from package metadata, nothing imported) and the ``TIERBOOK_PLUGIN_MODULES`` allow-list."""
    import importlib.metadata as md
    import os

    from ..registry import ENTRY_POINT_GROUP

    allowed = {ep.module: f"the entry point {ep.name!r}" for ep in md.entry_points(group=ENTRY_POINT_GROUP)}
    for name in os.environ.get(PLUGIN_MODULES_ENV, "").split(","):
        if name.strip():
            allowed.setdefault(name.strip(), PLUGIN_MODULES_ENV)
    return allowed


def _check_plugin_modules(doc: MarkedDict, modules: list[str], problems: _Problems) -> None:
    """A playbook is data from someone else: it may only name modules that are known tierbook plugins.

    ``plugins: [os]`` would otherwise import any installed module, running its code, while a playbook
    is merely validated. The check reads package metadata and the environment; it imports nothing.
    """
    if not modules:
        return
    allowed = allowed_plugin_modules()
    node = doc.get("plugins")
    for i, name in enumerate(modules):
        if name not in allowed:
            line = node.item_line(i) if isinstance(node, MarkedList) else doc.value_line("plugins")
            problems.add(line, f"plugins: {_short(name)} is not a tierbook plugin: a playbook may name only the "
                               f"modules of installed tierbook plugins (entry points of the 'tierbook' group) or "
                               f"modules listed in {PLUGIN_MODULES_ENV}; nothing was imported")


def _load_data(doc: MarkedDict, base: Path, problems: _Problems, engine: str = "polars") -> dict[str, Any]:
    node = doc.get("data")
    if not isinstance(node, MarkedDict):
        return {}
    _check_keys(node, DATA_KEYS, "data", problems)
    out: dict[str, Any] = {}
    for key in ("transactions", "customers"):
        value = node.get(key)
        if isinstance(value, str) and value.strip():
            p = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
            if key == "transactions" and engine == "spark":  # Parquet: a file, a directory or a glob
                from ..spark import parquet_files

                try:
                    parquet_files(str(p))
                except TierbookError as exc:
                    problems.add(node.value_line(key), f"data.transactions: {exc}")
                out[key] = p
                continue
            try:
                exists, is_dir = p.exists(), p.is_dir()
            except OSError as exc:  # e.g. a name longer than the file system allows
                problems.add(node.value_line(key), f"data.{key}: cannot use {_short(value)}: {exc.strerror}")
                continue
            if not exists:
                problems.add(node.value_line(key), f"data.{key}: no such file {value!r} (looked at {p})")
            elif is_dir:
                problems.add(node.value_line(key), f"data.{key}: {value!r} is a directory, expected a file")
            out[key] = p
    mapping = node.get("map")
    if isinstance(mapping, MarkedDict):
        for key, value in mapping.items():
            if key not in CANONICAL:
                problems.add(mapping.key_line(key), f"data.map: {key!r} is not a canonical column"
                                                    f"{suggest(str(key), CANONICAL)} (canonical: {', '.join(CANONICAL)})")
            elif not isinstance(value, str) or not value.strip():
                problems.add(mapping.value_line(key), f"data.map.{key}: expected a column name, got {value!r}")
        out["map"] = {str(k): str(v) for k, v in mapping.items()}
    if "as_of" in node:
        try:
            out["as_of"] = as_date(node["as_of"], where="data.as_of")
        except DataError as exc:
            problems.add(node.value_line("as_of"), str(exc))
    for key in ("customers_id", "date_format", "sheet"):
        if isinstance(node.get(key), str):
            out[key] = node[key]
    if isinstance(node.get("delimiter"), str):
        try:
            out["delimiter"] = check_delimiter(node["delimiter"])
        except DataError as exc:
            problems.add(node.value_line("delimiter"), str(exc))
    if isinstance(node.get("decimal_comma"), bool):
        out["decimal_comma"] = node["decimal_comma"]
    for key in ("sheet", "delimiter", "decimal_comma"):
        if engine == "spark" and key in node:
            problems.add(node.key_line(key), f"data.{key}: does not apply to engine: spark (Parquet)")
    out["_lines"] = {k: node.value_line(k) for k in node}
    return out


def _load_classifiers(doc, registry, overrides, problems):
    node = doc.get("classifiers")
    selections: list[Selection] = []
    raw: dict[str, dict[str, Any]] = {}
    if not isinstance(node, MarkedDict):
        return selections, raw
    if not node:
        problems.add(doc.value_line("classifiers"), "classifiers: name at least one classifier")
    override = split_params(overrides) if overrides else {}
    for name in override:
        if name not in node:
            problems.add(node.line, f"{option('params')} {name}...: classifier {name!r} is not in this playbook"
                                    f"{suggest(name, node)} (classifiers: {', '.join(map(str, node))})")
    for name, values in node.items():
        line = node.key_line(name)
        if name not in registry.classifiers:
            known = ", ".join(sorted(registry.classifiers)) or "none installed"
            failed = "".join(f"; a plugin failed to load: {f}" for f in registry.failures)
            problems.add(line, f"classifiers: unknown classifier {name!r}{suggest(str(name), registry.classifiers)}"
                               f" (installed: {known}){failed}")
            continue
        if values is None:
            values = MarkedDict()
            values.line = line
        if not isinstance(values, dict):
            problems.add(node.value_line(name), f"classifiers.{name}: expected a mapping of parameters, "
                                                f"got {values!r}")
            continue
        clf = registry.classifiers[name]
        merged = dict(values)
        sources = {k: f"{problems.path}:{values.value_line(k)}: classifiers.{name}.{k}"
                   for k in values} if isinstance(values, MarkedDict) else {}
        for k, v in override.get(name, {}).items():
            merged[k] = v
            sources[k] = f"{option('params')} {name}.{k}"
        try:
            params = clf.resolve(merged, sources)
        except ParamError as exc:
            if exc.param in values and exc.param not in override.get(name, {}):  # a value of the playbook
                problems.add(values.value_line(exc.param) if isinstance(values, MarkedDict) else line,
                             f"classifiers.{name}.{exc.param}: {exc.reason}")
            else:
                problems.add(line, str(exc))
            continue
        selections.append(Selection(clf, params))
        raw[name] = {k: params[k] for k in merged}
    return selections, raw


def _non_text_key(value: Any) -> tuple[Any] | None:
    """The first mapping key in ``value`` (nested mappings and lists included) that is not text, as ``(key,)``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return (k,)
            found = _non_text_key(v)
            if found is not None:
                return found
    elif isinstance(value, list):
        for v in value:
            found = _non_text_key(v)
            if found is not None:
                return found
    return None


def _load_action(item: MarkedDict, keys, what: str, index: int, problems: _Problems) -> Rule | None:
    if not _check_keys(item, keys, what, problems):
        return None
    due = item.get("due_days", DEFAULT_DUE_DAYS)
    if not 0 <= due <= MAX_DUE_DAYS:
        problems.add(item.value_line("due_days"), f"{what}: due_days must be between 0 and {MAX_DUE_DAYS:,} "
                                                  f"(100 years), got {_short(due)}")
    priority = item.get("priority", index + 1)
    if not 1 <= priority <= MAX_PRIORITY:
        problems.add(item.value_line("priority"), f"{what}: priority must be between 1 and {MAX_PRIORITY:,}, "
                                                  f"got {_short(priority)}")
    params = dict(item.get("params") or {})
    bad_key = _non_text_key(params)
    params_text = ""
    if bad_key is not None:  # JSON (the parameters column) has text keys only, and sorts them
        problems.add(item.value_line("params"), f"{what}: params keys must be text, got {_short(bad_key[0])} "
                                                f"({type(bad_key[0]).__name__}); quote it")
    else:
        params_text = json.dumps(params, sort_keys=True, default=str)
    if len(params_text) > MAX_PARAMS_CHARS:  # written into every action row of the rule
        problems.add(item.value_line("params"), f"{what}: params are {len(params_text):,} characters as JSON; at most "
                                                f"{MAX_PARAMS_CHARS:,} (they are written into every action row)")
    capacity, order_by, descending = None, "monetary", True
    if "capacity" in item:
        cap = item["capacity"]
        line = item.value_line("capacity")
        if isinstance(cap, dict):
            unknown = [k for k in cap if k not in ("max", "order_by")]
            if unknown:
                problems.add(line, f"{what}: capacity: unknown key {unknown[0]!r}"
                                   f"{suggest(str(unknown[0]), ['max', 'order_by'])} (known: max, order_by)")
            max_ = cap.get("max")
            order_text = cap.get("order_by", "monetary desc")
        else:
            max_, order_text = cap, "monetary desc"
        if not isinstance(max_, int) or isinstance(max_, bool) or max_ < 1:
            problems.add(line, f"{what}: capacity must be a whole number of customers >= 1, got {max_!r}")
        else:
            capacity = max_
        if not isinstance(order_text, str) or not order_text.split():
            problems.add(line, f"{what}: capacity.order_by must be 'column [asc|desc]', got {order_text!r}")
        else:
            parts = order_text.split()
            order_by = parts[0]
            if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
                problems.add(line, f"{what}: capacity.order_by must be 'column [asc|desc]', got {order_text!r}")
            descending = len(parts) < 2 or parts[1].lower() == "desc"
    holdout = _load_holdout(item, f"{what}: holdout", problems)
    return Rule(
        holdout=holdout,
        name=str(item.get("name", "fallback")), when=item.get("when"), action=item["action"],
        channel=item["channel"], owner=item["owner"], due_days=due, priority=priority, params=params,
        capacity=capacity, capacity_line=item.value_line("capacity") if "capacity" in item else item.line,
        order_by=order_by, descending=descending, line=item.line,
        when_line=item.value_line("when") if "when" in item else item.line,
        description=item.get("description", ""),
        due_line=item.value_line("due_days") if "due_days" in item else item.line,
    )


def _load_holdout(parent: MarkedDict, what: str, problems: _Problems) -> Holdout | None:
    """``holdout: {share: 0.1, salt: TEXT}`` of a rule, the fallback or the playbook (None when absent)."""
    if "holdout" not in parent:
        return None
    node, line = parent["holdout"], parent.value_line("holdout")
    example = "{share: 0.1, salt: 'win-back-2026-11'}"
    if not isinstance(node, MarkedDict):  # _check_keys has said it must be a mapping
        return None
    ok = True
    for key in node:
        if key not in HOLDOUT_KEYS:
            problems.add(node.value_line(key), f"{what}: unknown key {key!r}{suggest(str(key), HOLDOUT_KEYS)} "
                                               f"(known: share, salt)")
            ok = False
    share = node.get("share")
    if not ok:  # a misspelt key: the missing one is that one
        return None
    if "share" not in node:
        problems.add(line, f"{what}: share is missing: the share of customers held out, 0 to 1, e.g. {example}")
        ok = False
    elif not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1:
        problems.add(node.value_line("share"), f"{what}: share must be a number from 0 to 1 (0.1 holds out 10% "
                                               f"of the customers), got {_short(share)}")
        ok = False
    elif abs(share * BUCKETS - round(share * BUCKETS)) > 1e-6:
        problems.add(node.value_line("share"), f"{what}: share must be a multiple of 0.0001 (customers are dealt "
                                               f"into {BUCKETS:,} buckets), got {share!r}")
        ok = False
    salt = node.get("salt")
    if "salt" not in node or salt is None:
        problems.add(node.value_line("salt") if "salt" in node else line,
                     f"{what}: salt is missing: any text that names this holdout, e.g. {example}; the same salt "
                     f"keeps the same customers held out run after run, a new one draws new customers")
        ok = False
    elif not isinstance(salt, str) or not salt or "\x00" in salt or len(salt) > MAX_SALT_CHARS:
        problems.add(node.value_line("salt"), f"{what}: salt must be text of 1 to {MAX_SALT_CHARS} characters "
                                              f"without NUL (quote a number: '2026'), got {_short(salt)}")
        ok = False
    return Holdout(share=float(share), salt=salt, line=line) if ok else None


def _load_rules(doc: MarkedDict, problems: _Problems) -> list[Rule]:
    node = doc.get("rules")
    rules: list[Rule] = []
    if not isinstance(node, MarkedList):
        return rules
    seen: dict[str, int] = {}
    for i, item in enumerate(node):
        if not isinstance(item, MarkedDict):
            problems.add(node.item_line(i), f"rules[{i}]: expected a mapping with name, when, action ..., "
                                            f"got {item!r}")
            continue
        name = item.get("name")
        what = f"rule {name!r}" if isinstance(name, str) else f"rules[{i}]"
        rule = _load_action(item, ACTION_KEYS, what, i, problems)
        if isinstance(name, str):
            if name in seen:
                problems.add(item.value_line("name"), f"duplicate rule name {name!r} (first on line {seen[name]})")
            else:
                seen[name] = item.value_line("name")
        if rule is not None:
            rules.append(rule)
    return rules


def _load_fallback(doc: MarkedDict, problems: _Problems, n_rules: int) -> Rule | None:
    node = doc.get("fallback")
    if not isinstance(node, MarkedDict):
        return None
    return _load_action(node, FALLBACK_KEYS, "fallback", n_rules, problems)


def _check_fallback_name(doc: MarkedDict, rules: list[Rule], fallback: Rule | None, problems: _Problems) -> None:
    """No rule may have the fallback's name (``fallback`` unless ``fallback: name:`` says otherwise).

    The fallback is written as a rule of its own: actions.csv, cut.csv, summary.json and ``tierbook
    explain`` name it, so a rule of the same name could not be told apart from it.
    """
    if fallback is None:
        return
    fb = doc["fallback"]
    node = doc.get("rules")
    for item in node if isinstance(node, MarkedList) else []:
        if not isinstance(item, MarkedDict) or item.get("name") != fallback.name:
            continue
        if "name" in fb:
            problems.add(fb.value_line("name"), f"fallback: name {fallback.name!r} is also the name of the rule on "
                                                f"line {item.value_line('name')}; the outputs could not tell them "
                                                f"apart: give the fallback another name")
        else:
            problems.add(item.value_line("name"), f"rule {fallback.name!r}: {fallback.name!r} is the name of the "
                                                  f"fallback (line {doc.key_line('fallback')}); the outputs could not "
                                                  f"tell them apart: rename the rule, or name the fallback (fallback: "
                                                  f"name: ...)")


def _check_joinable(doc: MarkedDict, hit_policy: Any, problems: _Problems) -> None:
    """Under ``hit_policy: all`` no rule name or action may hold the text that joins a customer's several
    actions (and rules) in the customers file: ``a; b`` could not be told from the two actions ``a`` and ``b``."""
    if hit_policy != "all":
        return
    node = doc.get("rules")
    items = [(f"rules[{i}]", item) for i, item in enumerate(node)] if isinstance(node, MarkedList) else []
    if isinstance(doc.get("fallback"), MarkedDict):
        items.append(("fallback", doc["fallback"]))
    for where, item in items:
        if not isinstance(item, MarkedDict):
            continue
        for key in ("name", "action"):
            value = item.get(key)
            if isinstance(value, str) and JOIN in value:
                what = f"rule {item['name']!r}" if isinstance(item.get("name"), str) and where != "fallback" \
                    else where
                problems.add(item.value_line(key), f"{what}: {key} {value!r} holds {JOIN!r}, which joins a "
                                                   f"customer's actions under hit_policy: all, so the customers file "
                                                   f"could not tell it from two; write it without {JOIN!r}")


def _load_outputs(doc, base: Path, path: Path, output_dir, allow_outside: bool, problems: _Problems) -> dict:
    node = doc.get("outputs")
    out: dict[str, Any] = dict(OUTPUT_DEFAULTS)
    line = doc.key_line("outputs") if "outputs" in doc else 1
    key_lines = {k: node.value_line(k) for k in node} if isinstance(node, MarkedDict) else {}
    if isinstance(node, MarkedDict):
        _check_keys(node, OUTPUT_KEYS, "outputs", problems)
        for key in OUTPUT_DEFAULTS:
            if isinstance(node.get(key), str):
                name = node[key]
                if Path(name).name != name or name in (".", ".."):
                    problems.add(node.value_line(key), f"outputs.{key}: {name!r} must be a file name, "
                                                       f"without directories (set outputs.dir)")
                out[key] = name
    first: dict[str, str] = {}
    for key in OUTPUT_DEFAULTS:  # two outputs under one name: the later would replace the earlier
        folded = out[key].casefold()
        if folded in first:
            other = first[folded]
            problems.add(key_lines.get(key, line), f"outputs.{key}: {out[key]!r} is also the file of outputs.{other}"
                                                   f"{f' (line {key_lines[other]})' if other in key_lines else ''}; "
                                                   f"each output needs its own file name")
        else:
            first[folded] = key
    name = doc.get("name") if isinstance(doc.get("name"), str) else path.stem
    if output_dir is not None:
        directory = Path(output_dir).resolve()
    else:
        rel = node.get("dir") if isinstance(node, MarkedDict) and isinstance(node.get("dir"), str) else f"out/{name}"
        directory = (base / rel).resolve()
        if isinstance(node, MarkedDict) and "dir" in node:
            line = node.value_line("dir")
        if not allow_outside and not directory.is_relative_to(base):
            problems.add(line, f"outputs.dir: {rel!r} leads outside the playbook's directory ({directory}); "
                               f"use {option('output_dir')} or {option('allow_outside')} to write there")
    try:
        if directory.exists() and not directory.is_dir():
            problems.add(line, f"outputs.dir: {directory} exists and is not a directory")
    except OSError as exc:  # e.g. a name longer than the file system allows
        problems.add(line, f"outputs.dir: cannot use {_short(str(directory))}: {exc.strerror}")
        out["dir"] = directory
        return out
    for key in OUTPUT_DEFAULTS:
        target = directory / out[key]
        try:
            if target.is_dir():
                problems.add(key_lines.get(key, line), f"outputs.{key}: {target} exists as a directory")
        except OSError as exc:
            problems.add(key_lines.get(key, line), f"outputs.{key}: cannot use {_short(str(target))}: "
                                                   f"{exc.strerror}")
        if key != "summary":
            suffix = Path(out[key]).suffix.lower()
            if suffix not in OUTPUT_FORMATS:
                problems.add(key_lines.get(key, line), f"outputs.{key}: {out[key]!r} has no known suffix "
                                   f"({', '.join(OUTPUT_FORMATS)})")
    out["dir"] = directory
    return out


def _check_outputs_spare_inputs(doc, path: Path, data: dict, outputs: dict, problems: _Problems) -> None:
    """An output may never replace the playbook or one of its input files."""
    inputs = {Path(path).resolve(): "the playbook itself"}
    for key in ("transactions", "customers"):
        if isinstance(data.get(key), (str, Path)):
            inputs[Path(data[key]).resolve()] = f"data.{key}"
    node = doc.get("outputs")
    for key in OUTPUT_DEFAULTS:
        target = (outputs["dir"] / outputs[key]).resolve()
        if target in inputs:
            line = node.value_line(key) if isinstance(node, MarkedDict) and key in node else \
                (doc.key_line("outputs") if "outputs" in doc else 1)
            problems.add(line, f"outputs.{key}: {target} is {inputs[target]}; an output may not replace an input")


def _predicted_schema(doc, data, registry, selections, problems, engine="polars"):
    """The customer table's schema, from the files' headers and the plugins' declarations."""
    lines = data.get("_lines", {})
    schema: dict[str, pl.DataType] = {}
    table = None
    if "transactions" not in data:
        return schema, table
    try:
        source = data["transactions"]
        if engine == "spark":  # the columns of the Parquet files, without reading a row
            from ..spark import empty_frame

            source = empty_frame(str(source))
        tx = read_transactions(source, data.get("map") or None,
                               date_format=data.get("date_format"), sheet=data.get("sheet"), check_date_order=False,
                               delimiter=data.get("delimiter"), decimal_comma=data.get("decimal_comma", False))
        id_dtype = tx.frame.collect_schema()["customer_id"]
    except TierbookError as exc:
        problems.add(lines.get("map", lines.get("transactions", 1)), str(exc))
        return schema, table
    schema["customer_id"] = id_dtype
    schema.update(FEATURE_DTYPES)
    empty = pl.LazyFrame(schema={**PLUGIN_ROW_COLUMNS, "customer_id": id_dtype})
    for name, feat in registry.features.items():
        try:
            if feat.agg is not None:
                dtype = empty.group_by("customer_id").agg(feat.agg.alias(name)).collect_schema()[name]
            elif feat.table is not None:
                dtype = feat.table(empty).collect_schema()[name]
            else:
                dtype = pl.LazyFrame(schema=schema).select(feat.derive.alias(name)).collect_schema()[name]
        except pl.exceptions.PolarsError as exc:
            owner = registry.feature_owners[name].label()
            problems.add(1, f"feature {name!r} of plugin {owner} is invalid: {str(exc).splitlines()[0]}")
            continue
        schema[name] = dtype
    if "customers" in data:
        try:
            reserved = frozenset(BUILTIN_FEATURES) | frozenset(registry.features)
            table = read_customers(data["customers"], data.get("customers_id"), reserved=reserved)
        except TierbookError as exc:
            problems.add(lines.get("customers", 1), str(exc))
            return schema, table
        for col, dtype in table.schema.items():
            if col != "customer_id":
                schema[col] = dtype
    # A classifier's column may not have a name the customer table already has (a feature, a column of
    # data.customers, another classifier's column): the run would stop on it, so validation does.
    node = doc.get("classifiers")
    table_columns = set(table.columns) - {"customer_id"} if table is not None else set()
    written: dict[str, str] = {}
    for sel in selections:
        name = sel.classifier.name
        for out in sel.outputs:
            if out.column in written:
                other = written[out.column]
            elif out.column in table_columns:
                other = f"data.customers (line {lines.get('customers', 1)})"
            elif out.column in schema:
                other = "the customer table (a feature)"
            else:
                other = None
            if other is not None:
                problems.add(node.key_line(name) if isinstance(node, MarkedDict) else 1,
                             f"classifiers.{name}: classifier {name!r} writes column {out.column!r}, which {other} "
                             f"already has; rename that column")
            written[out.column] = f"classifier {name!r}"
            schema[out.column] = out.polars_dtype
    # The customers file gains the action each customer got: a column of that name would be shadowed.
    from .write import ACTION_COLUMNS

    for column in ACTION_COLUMNS:
        if column in written:
            node_line = node.key_line(written[column].split("'")[1]) if isinstance(node, MarkedDict) else 1
            problems.add(node_line, f"{written[column]} writes column {column!r}, the name of the column the "
                                    f"customers output gets for each customer's action; rename that column")
        elif column in table_columns:
            problems.add(lines.get("customers", 1), f"data.customers: column {column!r} is the name of the column "
                                                    f"the customers output gets for each customer's action; "
                                                    f"rename that column")
        elif column in schema:
            problems.add(1, f"feature {column!r} has the name of the column the customers output gets for each "
                            f"customer's action; rename that feature")
    return schema, table


def _check_requires(doc, registry, selections, schema, problems) -> None:
    """A classifier needing a column the customer table will not have fails validation, not the run."""
    node = doc.get("classifiers")
    for sel in selections:
        clf = sel.classifier
        line = node.key_line(clf.name) if isinstance(node, MarkedDict) else 1
        owner = registry.owners[clf.name].label() if clf.name in registry.owners else "its plugin"
        for col in sel.requires:
            if col not in schema:
                problems.add(line, f"classifiers.{clf.name}: classifier {clf.name!r} of {owner} needs column "
                                   f"{col!r}, which the customer table will not have{suggest(col, schema)}")


def _compile_rules(rules, fallback, schema, selections, as_of, doc, problems):
    from ..rules import RuleError, compile_rule

    labels = {o.column: o.labels for s in selections for o in s.outputs if o.labels is not None}
    reference = as_of or dt.date.today()
    for rule in rules:
        try:
            compile_rule(rule.when, schema, labels=labels, as_of=reference)
        except RuleError as exc:  # every problem of the rule, not only the first
            for error in exc.errors:
                problems.add(rule.when_line, f"rule {rule.name!r}: {error}")
        if rule.capacity is not None:
            if rule.order_by not in schema:
                problems.add(rule.capacity_line, f"rule {rule.name!r}: capacity.order_by: unknown column "
                                        f"{rule.order_by!r}{suggest(rule.order_by, schema)}")
