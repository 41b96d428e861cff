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
"""

from __future__ import annotations

import datetime as dt
import difflib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from .data import CANONICAL, as_date, check_delimiter, read_customers, read_transactions
from .errors import (
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
from .feature_table import FEATURES
from .features import BUILTIN_FEATURES, to_units
from .io import OUTPUT_FORMATS
from .registry import Registry, get_registry
from .run import Prepared, Selection, _amount, apply_classifiers, prepare, split_params, summarize
from .terminal import safe_lines
from .yamlio import MarkedDict, MarkedList, load_marked

__all__ = ["Playbook", "Rule", "Result", "load_playbook", "playbook_schema", "FEATURE_DTYPES"]

#: The dtypes of the built-in features (``customer_id`` takes the source's type), from the one table.
FEATURE_DTYPES: dict[str, pl.DataType] = {f.name: f.dtype for f in FEATURES}

HIT_POLICIES = ("first", "all")

# key: (kind, required, description). Kinds: str, int, number, date, mapping, list, bool, any.
TOP_KEYS: dict[str, tuple[str, bool, str]] = {
    "name": ("str", True, "Short name of the playbook."),
    "description": ("str", False, "What the playbook is for."),
    "data": ("mapping", True, "Where the data is and how its columns map onto tierbook's."),
    "plugins": ("list", False, "Plugin modules to load: modules of installed tierbook plugins, or modules "
                               "allowed by TIERBOOK_PLUGIN_MODULES."),
    "classifiers": ("mapping", True, "Classifiers to run, each with its parameters."),
    "hit_policy": ("str", False, "first: each customer gets the first matching rule; all: every matching rule."),
    "rules": ("list", False, "Rules that turn classes into actions, in order."),
    "fallback": ("mapping", False, "The action for customers no rule matched."),
    "outputs": ("mapping", False, "Where results are written."),
    "engine": ("str", False, "Where the feature pass runs: polars (default) or spark (Parquet input)."),
    "spark": ("mapping", False, "For engine: spark: master (URL, default local[*]) and config (key: value)."),
}
SPARK_KEYS: dict[str, tuple[str, bool, str]] = {
    "master": ("str", False, "Spark master URL: local[N], spark://HOST:PORT, yarn, k8s://... (default local[*])."),
    "config": ("mapping", False, "Spark configuration, e.g. spark.executor.memory: 4g."),
}
DATA_KEYS: dict[str, tuple[str, bool, str]] = {
    "transactions": ("str", True, "Transactions file (CSV, Parquet, NDJSON, xlsx), relative to the playbook."),
    "map": ("mapping", False, "Canonical column -> source column."),
    "customers": ("str", False, "Customer table (customer_id plus attributes), relative to the playbook."),
    "customers_id": ("str", False, "The customer table's id column (default customer_id)."),
    "as_of": ("date", False, "Reference date YYYY-MM-DD (default: the day after the last transaction)."),
    "date_format": ("str", False, "strftime format of text dates, e.g. %d/%m/%Y."),
    "sheet": ("str", False, "Excel sheet of the transactions."),
    "delimiter": ("str", False, "CSV field delimiter of the transactions, e.g. ';' or tab (default: a comma, or "
                                "';' or a tab when the header has no comma)."),
    "decimal_comma": ("bool", False, "Read text amounts with a decimal comma: 12,50 and 1.234,50."),
}
ACTION_KEYS: dict[str, tuple[str, bool, str]] = {
    "name": ("str", True, "Unique rule name."),
    "description": ("str", False, "What the rule is for."),
    "when": ("str", True, "Condition over customer columns and class labels, e.g. monetary > 500 AND frequency >= 3."),
    "action": ("str", True, "What to do."),
    "channel": ("str", True, "email, sms, phone, visit, ads, mail, ..."),
    "owner": ("str", True, "The team that does it."),
    "due_days": ("int", False, "Days after as_of by which it is due (default 7, at most 36,500)."),
    "priority": ("int", False, "1 is the most urgent (default: the rule's position; at most 1,000,000)."),
    "params": ("mapping", False, "Free-form parameters: offer code, template name ..."),
    "capacity": ("any", False, "At most this many customers: N, or {max: N, order_by: 'monetary desc'}."),
}
FALLBACK_KEYS = {k: v for k, v in ACTION_KEYS.items() if k not in ("when", "capacity")}
FALLBACK_KEYS["name"] = ("str", False, "Name of the fallback rule (default 'fallback').")
OUTPUT_KEYS: dict[str, tuple[str, bool, str]] = {
    "dir": ("str", False, "Output directory, relative to the playbook (default out/<name>)."),
    "customers": ("str", False, "File name for customers with labels (default customers.parquet)."),
    "actions": ("str", False, "File name for the actions list (default actions.csv)."),
    "cut": ("str", False, "File name for customers cut by capacity (default cut.csv)."),
    "summary": ("str", False, "File name for the summary (default summary.json)."),
}
OUTPUT_DEFAULTS = {"customers": "customers.parquet", "actions": "actions.csv", "cut": "cut.csv",
                   "summary": "summary.json"}
DEFAULT_DUE_DAYS = 7
#: Bounds a run depends on, checked by validation: a due date must be a date (as_of + due_days), a
#: priority fits the Int64 column of actions.csv with room to spare.
MAX_DUE_DAYS = 36_500
MAX_PRIORITY = 1_000_000
#: Longest parameters of one rule, as JSON text: they are repeated on each of its rows in actions.csv.
MAX_PARAMS_CHARS = 10_000


@dataclass(frozen=True)
class Rule:
    """One rule of a playbook."""

    name: str
    when: str | None
    action: str
    channel: str
    owner: str
    due_days: int
    priority: int
    params: dict[str, Any] = field(default_factory=dict)
    capacity: int | None = None
    capacity_line: int = 0
    order_by: str = "monetary"
    descending: bool = True
    line: int = 0
    when_line: int = 0
    description: str = ""
    due_line: int = 0


@dataclass
class Result:
    """What a playbook run produced (nothing here has been written yet)."""

    customers: pl.DataFrame
    actions: pl.DataFrame
    cut: pl.DataFrame
    classes: pl.DataFrame
    rule_summary: pl.DataFrame
    summary: dict[str, Any]
    as_of: dt.date
    #: What the scan of the transactions counted (the input side of the reconciliation).
    report: Any = None


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


@dataclass
class Playbook:
    """A validated playbook. Build it with :func:`load_playbook`."""

    path: Path
    name: str
    description: str
    data: dict[str, Any]
    classifier_params: dict[str, dict[str, Any]]     # as written (and as tuned by with_params)
    selections: list[Selection]
    rules: list[Rule]
    hit_policy: str
    fallback: Rule | None
    outputs: dict[str, Any]
    registry: Registry
    plugins: list[str] = field(default_factory=list)
    customer_table: pl.DataFrame | None = None
    #: where the feature pass runs (``engine:``), and the ``spark:`` settings
    engine: str = "polars"
    spark: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ access
    @property
    def classifiers(self) -> dict[str, dict[str, Any]]:
        """Resolved parameters (defaults filled in) of each classifier, in playbook order."""
        return {s.classifier.name: dict(s.params) for s in self.selections}

    @property
    def output_dir(self) -> Path:
        return Path(self.outputs["dir"])

    def output_paths(self) -> dict[str, Path]:
        return {k: self.output_dir / self.outputs[k] for k in OUTPUT_DEFAULTS if self.outputs.get(k)}

    def with_params(self, params: Any) -> Playbook:
        """A copy with some parameters changed (validated): ``{"abc": {"a": 0.7}}`` or ``{"abc.a": 0.7}``."""
        changes = split_params(params)
        raw = {name: dict(values) for name, values in self.classifier_params.items()}
        for name, values in changes.items():
            if name not in raw:
                raise ParamError(f"{self.path}: classifier {name!r} is not in this playbook"
                                 f"{suggest(name, raw)} (classifiers: {', '.join(raw)})")
            raw[name].update(values)
        selections = []
        for sel in self.selections:
            name = sel.classifier.name
            params_ = sel.classifier.resolve(raw[name], {k: f"{name}.{k}" for k in changes.get(name, {})})
            selections.append(Selection(sel.classifier, params_))
            # keep the validated (typed) values, e.g. "0.7" from the CLI becomes 0.7
            for k in changes.get(name, {}):
                raw[name][k] = params_[k]
        return replace(self, classifier_params=raw, selections=selections)

    # --------------------------------------------------------------------- run
    def prepare(self, as_of: str | dt.date | None = None) -> Prepared:
        """Read the transactions (once) and compute the customer table."""
        d = self.data
        as_of = as_date(as_of) if as_of is not None else d.get("as_of")
        with speaking(PLAYBOOK_WORDS):  # a message about the data names the playbook's keys (data.map ...)
            return prepare(
                d["transactions"], mapping=d.get("map") or None,
                customers=self.customer_table if self.customer_table is not None else None,
                as_of=as_of, date_format=d.get("date_format"), sheet=d.get("sheet"), registry=self.registry,
                delimiter=d.get("delimiter"), decimal_comma=d.get("decimal_comma", False),
                engine=self.engine, spark=self.spark,
            )

    def evaluate(self, prepared: Prepared, *, skip_failing: bool = False) -> Result:
        """Classify, apply the rules and build the summary (no I/O).

        With ``skip_failing`` a classifier that fails is skipped: its columns
        stay empty, a rule that reads one is not evaluated (it matches no one;
        ``summary["skipped_rules"]``), and ``summary["skipped_plugins"]`` names
        the classifier, with the plugins that failed to load.
        """
        skipped = [str(f) for f in self.registry.failures] if skip_failing else None
        failed: dict[str, str] = {}
        customers = apply_classifiers(prepared.customers, self.selections, as_of=prepared.as_of,
                                      registry=self.registry, skipped=skipped, skipped_classifiers=failed)
        empty = {o.column: name for s in self.selections if (name := s.classifier.name) in failed for o in s.outputs}
        result = _evaluate_rules(self, prepared, customers, skipped_columns=empty)
        if skipped:
            result.summary["skipped_plugins"] = skipped
        return result

    def run(self, *, as_of: str | dt.date | None = None, write: bool = True) -> Result:
        """Prepare, evaluate and (unless ``write=False``) write the outputs atomically."""
        prepared = self.prepare(as_of)
        result = self.evaluate(prepared)
        if write:
            self.write(result)
        return result

    def write(self, result: Result) -> dict[str, Path]:
        """Write every output as one set: all of them change together, or (on any failure) none does.

        See :func:`engine.io.write_output_set`: the files are written into a new
        generation inside the output directory and switched in by one rename.
        """
        from .io import write_output_set

        paths = self.output_paths()
        frames = {"customers": result.customers, "actions": result.actions, "cut": result.cut}
        writers = {}
        for key, path in paths.items():
            if key != "summary":
                writers[path.name] = lambda tmp, frame=frames[key]: _write_frame(frame, tmp)
        customers_name = paths["customers"].name

        def write_summary(tmp: Path) -> None:
            # The reconciliation again, now against the customers file as written (read back from disk).
            written = _read_back(tmp.parent / customers_name)
            rec = reconcile(result.report, written, f"the written {customers_name}")
            check_reconciliation(rec)
            summary = {**result.summary, "reconciliation": rec}
            tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")

        writers[paths["summary"].name] = write_summary
        write_output_set(self.output_dir, writers,
                         manifest={"playbook": str(self.path), "name": self.name, "as_of": str(result.as_of)})
        return paths

    # -------------------------------------------------------------------- save
    def save(self, path: str | Path | None = None) -> str:
        """Write the current parameters into the playbook file, keeping comments and key order.

        Only parameter values that differ from the file are touched. Returns a
        unified diff of the change ("" when nothing changed).
        """
        from ruamel.yaml import YAML

        from .io import atomic_write_text

        target = Path(path) if path is not None else self.path
        source_text = self.path.read_text(encoding="utf-8")
        rt = YAML(typ="rt")
        rt.preserve_quotes = True
        rt.width = 4096
        # keep the author's list indentation ("  - name:" under "rules:"), so the diff is only the values
        from ruamel.yaml.util import load_yaml_guess_indent

        _, seq_indent, dash_offset = load_yaml_guess_indent(source_text)
        rt.indent(mapping=2, sequence=seq_indent or 4, offset=dash_offset if dash_offset is not None else 2)
        doc = rt.load(source_text)
        classifiers = doc["classifiers"]
        for name, values in self.classifier_params.items():
            if classifiers.get(name) is None:
                classifiers[name] = {}
            node = classifiers[name]
            for key, value in values.items():
                if key not in node or node[key] != value:
                    node[key] = value
        buf = io.StringIO()
        rt.dump(doc, buf)
        new_text = buf.getvalue()
        old_text = target.read_text(encoding="utf-8") if target.exists() else ""
        diff = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                            fromfile=str(target), tofile=str(target)))
        if new_text != old_text:
            atomic_write_text(new_text, target)
        return diff


def _read_back(path: Path) -> pl.DataFrame:
    """``customer_id`` and ``monetary`` of a written customers file, as the file holds them."""
    fmt = path.suffix.lower()
    if fmt == ".parquet":
        return pl.read_parquet(path, columns=["customer_id", "monetary"])
    if fmt == ".csv":
        return pl.read_csv(path, columns=["customer_id", "monetary"], schema_overrides={"customer_id": pl.String})
    if fmt == ".xlsx":
        return pl.read_excel(path, columns=["customer_id", "monetary"])
    frame = pl.read_json(path) if fmt == ".json" else pl.read_ndjson(path)
    return frame.select("customer_id", "monetary")


def _write_frame(frame: pl.DataFrame, path: Path) -> None:
    """One output frame in the format of its suffix (``path`` is a temporary file of the output set)."""
    from .io import write_frame

    if path.suffix.lower() == ".parquet":
        # Snappy: half zstd's time on the customer table (1M rows x 18 columns), ~1.4x its size.
        frame.write_parquet(path, compression="snappy")
    else:
        write_frame(frame, path)


# ---------------------------------------------------------------------- loading
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
) -> Playbook:
    """Load and validate a playbook; raise :class:`PlaybookError` listing every problem.

    ``params`` (``["abc.a=0.7"]`` or a mapping) override the playbook's values;
    ``output_dir`` overrides ``outputs.dir``. With ``check_data`` the data
    files' headers (not their rows) are read to check the column mapping and
    the columns rules use. With ``skip_failing_plugins`` a plugin that fails to
    load is recorded in ``registry.failures`` instead of stopping.
    ``plugins_dir`` also loads the local plugins of that directory (see
    :func:`~engine.registry.get_registry`).
    """
    path = Path(path)
    doc = load_marked(path)
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

    engine, spark = _load_engine(doc, problems)
    data = _load_data(doc, base, problems, engine)
    selections, raw_params = _load_classifiers(doc, registry, params, problems)
    hit_policy = doc.get("hit_policy", "first")
    if "hit_policy" in doc and hit_policy not in HIT_POLICIES:
        problems.add(doc.value_line("hit_policy"), f"hit_policy: {hit_policy!r} is not one of first, all"
                                                   f"{suggest(str(hit_policy), HIT_POLICIES)}")
    rules = _load_rules(doc, problems)
    fallback = _load_fallback(doc, problems, len(rules))
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
            schema, table = _predicted_schema(doc, data, registry, selections, problems)
        problems.raise_if_any()
        _check_requires(doc, registry, selections, schema, problems)
        problems.raise_if_any()
        _compile_rules(rules, fallback, schema, selections, data.get("as_of"), doc, problems)
        problems.raise_if_any()

    return Playbook(
        path=path, name=doc["name"], description=doc.get("description", ""), data=data,
        classifier_params=raw_params, selections=selections, rules=rules, hit_policy=hit_policy,
        fallback=fallback, outputs=outputs, registry=registry, plugins=plugin_modules, customer_table=table,
        engine=engine, spark=spark,
    )


def _load_engine(doc: MarkedDict, problems: _Problems) -> tuple[str, dict[str, Any]]:
    """``engine:`` and its ``spark:`` settings."""
    from .run import ENGINES

    engine = doc.get("engine", "polars")
    if engine not in ENGINES:
        problems.add(doc.value_line("engine"), f"engine: {engine!r} is not an engine{suggest(str(engine), ENGINES)} "
                                               f"(engines: {', '.join(ENGINES)})")
        engine = "polars"
    node = doc.get("spark")
    spark: dict[str, Any] = {}
    if isinstance(node, MarkedDict):
        if engine != "spark":
            problems.add(doc.key_line("spark"), "spark: applies to engine: spark only")
        if _check_keys(node, SPARK_KEYS, "spark", problems):
            spark = {"master": str(node.get("master", "local[*]")),
                     "config": {str(k): str(v) for k, v in (node.get("config") or {}).items()}}
    return engine, spark


#: Modules a playbook's ``plugins:`` may name besides installed tierbook plugins (comma-separated).
PLUGIN_MODULES_ENV = "TIERBOOK_PLUGIN_MODULES"


def allowed_plugin_modules() -> dict[str, str]:
    """The modules a playbook may import, each with why: installed entry points of the ``tierbook``
    group (read from package metadata, nothing imported) and the ``TIERBOOK_PLUGIN_MODULES`` allow-list."""
    import importlib.metadata as md
    import os

    from .registry import ENTRY_POINT_GROUP

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
                from .spark import parquet_files

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
    for key in ("date_format", "sheet", "delimiter", "decimal_comma"):
        if engine == "spark" and key in node:
            problems.add(node.key_line(key), f"data.{key}: does not apply to engine: spark (typed Parquet columns)")
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
    return Rule(
        name=str(item.get("name", "fallback")), when=item.get("when"), action=item["action"],
        channel=item["channel"], owner=item["owner"], due_days=due, priority=priority, params=params,
        capacity=capacity, capacity_line=item.value_line("capacity") if "capacity" in item else item.line,
        order_by=order_by, descending=descending, line=item.line,
        when_line=item.value_line("when") if "when" in item else item.line,
        description=item.get("description", ""),
        due_line=item.value_line("due_days") if "due_days" in item else item.line,
    )


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


def _predicted_schema(doc, data, registry, selections, problems):
    """The customer table's schema, from the files' headers and the plugins' declarations."""
    lines = data.get("_lines", {})
    schema: dict[str, pl.DataType] = {}
    table = None
    if "transactions" not in data:
        return schema, table
    try:
        source = data["transactions"]
        if doc.get("engine") == "spark":  # the columns of the Parquet files, without reading a row
            from .spark import empty_frame

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
    empty = pl.LazyFrame(schema={"customer_id": id_dtype, "order_id": pl.String, "order_date": pl.Date,
                                 "amount": pl.Float64})
    for name, feat in registry.features.items():
        try:
            if feat.agg is not None:
                dtype = empty.group_by("customer_id").agg(feat.agg.alias(name)).collect_schema()[name]
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
    for sel in selections:
        for out in sel.outputs:
            schema[out.column] = out.polars_dtype
    return schema, table


def _check_requires(doc, registry, selections, schema, problems) -> None:
    """A classifier needing a column the customer table will not have fails validation, not the run."""
    node = doc.get("classifiers")
    for sel in selections:
        clf = sel.classifier
        line = node.key_line(clf.name) if isinstance(node, MarkedDict) else 1
        owner = registry.owners[clf.name].label() if clf.name in registry.owners else "its plugin"
        for col in clf.requires:
            if col not in schema:
                problems.add(line, f"classifiers.{clf.name}: classifier {clf.name!r} of {owner} needs column "
                                   f"{col!r}, which the customer table will not have{suggest(col, schema)}")


def _compile_rules(rules, fallback, schema, selections, as_of, doc, problems):
    from .rules import RuleError, compile_rule

    labels = {o.column: o.labels for s in selections for o in s.outputs if o.labels is not None}
    reference = as_of or dt.date.today()
    for rule in rules:
        try:
            compile_rule(rule.when, schema, labels=labels, as_of=reference)
        except RuleError as exc:
            problems.add(rule.when_line, f"rule {rule.name!r}: {exc}")
        if rule.capacity is not None:
            if rule.order_by not in schema:
                problems.add(rule.capacity_line, f"rule {rule.name!r}: capacity.order_by: unknown column "
                                        f"{rule.order_by!r}{suggest(rule.order_by, schema)}")


def reconcile(report, customers: pl.DataFrame, where: str) -> dict[str, Any]:
    """Customers and revenue in (counted by the scan of the transactions) against out (``customers``).

    The input side does not come from the customer table: customers are those
    the feature ``group_by`` found plus the customer table's ids without a usable
    row (an anti-join of the two, not the join that builds the table), revenue is
    the usable rows' amounts summed by the scan itself. The output side is the
    rows of ``customers`` (the table in memory, or the written file read back)
    and their ``monetary``, in exact units. Either side going wrong makes them
    differ.
    """
    units_out = int(customers.select(to_units(pl.col("monetary")).sum()).item() or 0)  # exact, any size
    customers_in = report.customers_with_transactions + report.table_only
    return {
        "customers_in": customers_in,
        "customers_out": customers.height,
        "distinct_customers_out": customers["customer_id"].n_unique(),
        "revenue_in": _amount(report.scanned_units),
        "revenue_out": _amount(units_out),
        "counted_from": f"the scan of the transactions / {where}",
        "ok": customers_in == customers.height == customers["customer_id"].n_unique()
        and report.scanned_units == units_out,
    }


def check_reconciliation(rec: Mapping[str, Any]) -> None:
    """Stop when customers or revenue in and out differ (a bug, not a user error: nothing is written)."""
    if not rec["ok"]:
        raise DataError(f"reconciliation failed ({rec['counted_from']}): customers in {rec['customers_in']:,}, out "
                        f"{rec['customers_out']:,} ({rec['distinct_customers_out']:,} distinct); revenue in "
                        f"{rec['revenue_in']:,.4f}, out {rec['revenue_out']:,.4f}; nothing was written (please report "
                        f"this as a bug)")


def _late_due_dates(rules: Sequence[Rule], as_of: dt.date) -> list[tuple[int, str]]:
    """(line, message) for each rule whose due date, as_of + due_days, would be after the last date there is."""
    room = (dt.date.max - as_of).days
    return [(r.due_line, f"rule {r.name!r}: as_of {as_of} + due_days {r.due_days:,} is after {dt.date.max}, the last "
                         f"date there is (with this as_of due_days may be at most {room:,})")
            for r in rules if r.due_days > room]


# -------------------------------------------------------------------- evaluate
def _evaluate_rules(pb: Playbook, prepared: Prepared, customers: pl.DataFrame, *,
                    skipped_columns: Mapping[str, str] | None = None) -> Result:
    """Apply the rules to the classified ``customers``.

    ``skipped_columns`` maps the columns of classifiers skipped under
    ``--skip-failing-plugins`` (left empty) to the classifier: a rule that reads
    one is not evaluated (it matches no customer) and is listed in
    ``summary["skipped_rules"]``, since its condition would be decided by the
    missing values (``x IS NULL`` would match everyone).
    """
    from .rules import compile_rule

    as_of = prepared.as_of
    for line, message in _late_due_dates([*pb.rules, *([pb.fallback] if pb.fallback else [])], as_of):
        raise DataError(f"{pb.path}:{line}: {message}")
    labels = {o.column: o.labels for s in pb.selections for o in s.outputs if o.labels is not None}
    compiled = [compile_rule(r.when, customers.schema, labels=labels, as_of=as_of) for r in pb.rules]
    skipped_rules = []
    for i, (rule, c) in enumerate(zip(pb.rules, compiled)):
        empty = sorted(c.columns & set(skipped_columns or ()))
        if empty:
            names = ", ".join(f"{col!r} of classifier {skipped_columns[col]!r}" for col in empty)
            skipped_rules.append({"rule": rule.name, "reason": f"it reads {names}, which was skipped"})
            compiled[i] = replace(c, expr=pl.lit(False), overflows=())
    # Capacity rules rank their customers by a column: it travels with the flags (no join back).
    key_cols = list(dict.fromkeys(r.order_by for r in pb.rules if r.capacity is not None))
    key_names = [f"_key{j}" for j in range(len(key_cols))]
    overflows = [c.overflow.alias(f"_o{i}") for i, c in enumerate(compiled) if c.overflow is not None]
    flags = customers.select("customer_id", *[pl.col(c).alias(k) for c, k in zip(key_cols, key_names)],
                             *[c.expr.alias(f"_m{i}") for i, c in enumerate(compiled)], *overflows)
    for i, (rule, c) in enumerate(zip(pb.rules, compiled)):  # arithmetic that overflows stops the run
        if c.overflow is not None and flags[f"_o{i}"].any():
            raise DataError(f"{pb.path}:{rule.when_line}: rule {rule.name!r}: {c.overflow_error(customers)}")
    n = len(pb.rules)
    matched_counts = [int(flags[f"_m{i}"].sum()) for i in range(n)]

    # The (customer, rule) pairs of each rule, in customer order.
    if pb.hit_policy == "first" and n:
        first = pl.coalesce([pl.when(pl.col(f"_m{i}")).then(pl.lit(i, pl.Int32)) for i in range(n)])
        pairs = flags.select("customer_id", first.alias("_rule"), *key_names).filter(pl.col("_rule").is_not_null())
        parts = [pairs.filter(pl.col("_rule") == i) for i in range(n)]
    else:
        parts = [flags.filter(pl.col(f"_m{i}")).select("customer_id", pl.lit(i, pl.Int32).alias("_rule"), *key_names)
                 for i in range(n)]
    if n:
        matched_any = pl.any_horizontal([pl.col(f"_m{i}").fill_null(False) for i in range(n)])
        unmatched = flags.filter(~matched_any).select("customer_id")
    else:
        unmatched = customers.select("customer_id")
    del flags

    # Each rule's actions (ranked) and cut customers; parts stay in rule order, each in rank order.
    kept_parts, cut_parts = [], []
    for i, rule in enumerate(pb.rules):
        part = parts[i]
        if rule.capacity is not None:
            keyed = part.select("customer_id", "_rule", pl.col(key_names[key_cols.index(rule.order_by)]).alias("_key"))
            keyed = keyed.sort(["_key", "customer_id"], descending=[rule.descending, False], nulls_last=True)
            keyed = keyed.with_row_index("_rank", offset=1)
            kept_parts.append(keyed.filter(pl.col("_rank") <= rule.capacity).select("customer_id", "_rule", "_rank"))
            cut_parts.append(keyed.filter(pl.col("_rank") > rule.capacity).select("customer_id", "_rule", "_rank"))
        else:
            kept_parts.append(part.sort("customer_id").with_row_index("_rank", offset=1)
                              .select("customer_id", "_rule", "_rank"))
            cut_parts.append(None)
    id_dtype = customers.schema["customer_id"]
    empty = pl.DataFrame(schema={"customer_id": id_dtype, "_rule": pl.Int32, "_rank": pl.UInt32})
    rules_all = list(pb.rules)
    if pb.fallback is not None:
        fb_index = len(rules_all)
        rules_all.append(pb.fallback)
        kept_parts.append(unmatched.sort("customer_id").with_row_index("_rank", offset=1)
                          .select("customer_id", pl.lit(fb_index, pl.Int32).alias("_rule"), "_rank"))
        cut_parts.append(None)

    def enum(values: list[str]) -> pl.Series:
        # A closed set of the playbook's own text: an Enum holds each value once, where text columns would
        # hold it once per action (and the CSV writer checks each value once for spreadsheet formulas).
        return pl.Series(values, dtype=pl.Enum(list(dict.fromkeys(values))))

    meta = pl.DataFrame({
        "_rule": pl.Series(range(len(rules_all)), dtype=pl.Int32),
        "rule": enum([r.name for r in rules_all]),
        "action": enum([r.action for r in rules_all]),
        "channel": enum([r.channel for r in rules_all]),
        "owner": enum([r.owner for r in rules_all]),
        "due_date": [as_of + dt.timedelta(days=r.due_days) for r in rules_all],
        "priority": pl.Series([r.priority for r in rules_all], dtype=pl.Int64),
        "parameters": enum([json.dumps(r.params, sort_keys=True, default=str) for r in rules_all]),
    })
    # Actions in (priority, rule, rank) order: the parts concatenated by (priority, rule) are already in
    # that order, so no sort; the order-keeping join adds the rule's columns.
    by_priority = sorted(range(len(rules_all)), key=lambda i: (rules_all[i].priority, i))
    kept = pl.concat([empty, *[kept_parts[i] for i in by_priority]])
    actions = (kept.join(meta, on="_rule", how="left", maintain_order="left")
               .select("customer_id", "rule", "action", "channel", "owner", "due_date", "priority", "parameters"))
    cut = pl.concat([empty, *[c for c in cut_parts if c is not None]])
    cut_out = (cut.join(meta.select("_rule", "rule", "action"), on="_rule", how="left", maintain_order="left")
               .select("customer_id", "rule", "action", pl.col("_rank").alias("rank")))

    hits = [p.height for p in parts] + ([unmatched.height] if pb.fallback is not None else [])
    if pb.fallback is not None:
        hits = [unmatched.height if r.name == pb.fallback.name else h for r, h in zip(rules_all, hits)]
    rule_summary = meta.select("rule").with_columns(
        pl.Series("matched", matched_counts + ([unmatched.height] if pb.fallback else []), dtype=pl.Int64),
        pl.Series("hits", hits, dtype=pl.Int64),
        pl.Series("cut_by_capacity", [0 if c is None else c.height for c in cut_parts], dtype=pl.Int64),
        pl.Series("actions", [k.height for k in kept_parts], dtype=pl.Int64),
    )

    classes = summarize(customers, pb.selections)
    report = prepared.report
    summary = {
        "playbook": pb.name,
        "as_of": str(as_of),
        "hit_policy": pb.hit_policy,
        "input": report.to_dict(),
        "reconciliation": reconcile(report, customers, "the customer table"),
        "classes": classes.to_dicts(),
        "rules": rule_summary.to_dicts(),
        "unmatched": unmatched.height,
        "cut_by_capacity": cut_out.height,
        "actions": actions.height,
    }
    if skipped_rules:
        summary["skipped_rules"] = skipped_rules
    check_reconciliation(summary["reconciliation"])
    return Result(customers=customers, actions=actions, cut=cut_out, classes=classes, rule_summary=rule_summary,
                  summary=summary, as_of=as_of, report=report)


# ---------------------------------------------------------------------- schema
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
    })
    return top


def explain_customer(pb: Playbook, prepared: Prepared, result: Result, customer_id: str) -> str:
    """Text explaining one customer: features, labels, every rule and which clause failed."""
    from .rules import compile_rule

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
