"""The validated playbook: its parameters (:meth:`Playbook.with_params`), and running it
(prepare, evaluate, write, save).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from ..data import as_date
from ..errors import PLAYBOOK_WORDS, ParamError, option, speaking, suggest
from ..holdout import Holdout
from ..registry import Registry
from ..run import Prepared, Selection, apply_classifiers, prepare, split_params
from .evaluate import _playbook_result
from .spec import OUTPUT_DEFAULTS, Result, Rule


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
    #: ``snapshots:`` as checked by load_playbook (keys of :func:`engine.snapshots.snapshot_spec`), or None
    snapshots: dict[str, Any] | None = None
    #: the playbook-wide control group (``holdout:``): its customers get no action from any rule
    holdout: Holdout | None = None
    #: parameters given over the playbook's own (``--set``, ``with_params``), by classifier
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the ``expect:`` cases, each a customer and the action it must get (see :mod:`~engine.playbook.expect`)
    expectations: list[Any] = field(default_factory=list)
    #: the customer table's columns and types as validation predicted them from the files' headers
    customer_schema: dict[str, pl.DataType] = field(default_factory=dict)
    #: SHA-256 of the playbook file as it was loaded
    sha256: str = ""

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
        overrides = {name: dict(values) for name, values in self.overrides.items()}
        for name, values in changes.items():
            overrides.setdefault(name, {}).update({k: raw[name][k] for k in values})
        return replace(self, classifier_params=raw, selections=selections, overrides=overrides)

    # --------------------------------------------------------------------- run
    def prepare(self, as_of: str | dt.date | None = None) -> Prepared:
        """Read the transactions (once) and compute the customer table."""
        d = self.data
        source = "given" if as_of is not None else "data.as_of" if d.get("as_of") else \
            "the day after the last transaction"
        as_of = as_date(as_of) if as_of is not None else d.get("as_of")
        started = time.perf_counter()
        with speaking(PLAYBOOK_WORDS):  # a message about the data names the playbook's keys (data.map ...)
            prepared = prepare(
                d["transactions"], mapping=d.get("map") or None,
                customers=self.customer_table if self.customer_table is not None else None,
                as_of=as_of, date_format=d.get("date_format"), sheet=d.get("sheet"), registry=self.registry,
                delimiter=d.get("delimiter"), decimal_comma=d.get("decimal_comma", False),
                engine=self.engine, spark=self.spark,
                needs=self._needs(),
            )
        prepared.provenance = {"as_of_from": source,
                               "durations_s": {"read_and_features": round(time.perf_counter() - started, 3)}}
        return prepared

    def _needs(self) -> list[str]:
        """Columns this playbook uses: its classifiers' requirements and every word of its rules."""
        words = [c for sel in self.selections for c in sel.requires]
        for rule in [*self.rules, *([self.fallback] if self.fallback is not None else [])]:
            words += re.findall(r"\w+", f"{getattr(rule, 'when', '') or ''} {getattr(rule, 'order_by', '') or ''}")
        return words

    # --------------------------------------------------------------- snapshots
    def snapshot_spec(self, as_of: str | dt.date | None = None):
        """The :class:`engine.snapshots.SnapshotSpec` of ``snapshots:`` (None without it; None too when its
        end is the day after the last transaction, found when the data is read)."""
        from ..errors import DataError
        from ..snapshots import snapshot_spec

        s = self.snapshots
        if s is None:
            return None
        if as_of is not None and s.get("as_of") is not None:
            raise DataError(f"{self.path}: {option('as_of')} {as_of}: the snapshots' dates are given "
                            f"(snapshots.as_of); {option('as_of')} sets only the end of every/periods")
        end = as_date(as_of) if as_of is not None else self.data.get("as_of")
        with speaking(PLAYBOOK_WORDS if s["words"] == "playbook" else {}):
            return snapshot_spec(as_of=s.get("as_of"), every=s.get("every"), periods=s.get("periods"),
                                 end=s.get("end"), windows=s.get("window"), cohort=s.get("cohort"), default_end=end)

    def compute_snapshots(self, as_of: str | dt.date | None = None, *, skip_failing: bool = False):
        """Every snapshot of ``snapshots:`` from one scan, classified, with migration and KPIs
        (:class:`engine.snapshots.Snapshots`); see :func:`engine.snapshots.run_snapshots`."""
        from ..data import read_customers, read_transactions
        from ..features import BUILTIN_FEATURES
        from ..snapshots import default_end, snapshot_spec, snapshots_of

        started = time.perf_counter()
        d = self.data
        spec = self.snapshot_spec(as_of)
        s = self.snapshots
        with speaking(PLAYBOOK_WORDS if s["words"] == "playbook" else {}):
            collect = None
            if self.engine == "spark":  # the same queries, run by Spark on each partition of customers
                from ..spark import SparkSettings, spark_source

                source = spark_source(d["transactions"], d.get("map") or None, date_format=d.get("date_format"),
                                      settings=SparkSettings.from_mapping(self.spark))
                tx, collect, end = source.tx, source.collect, source.default_end
            else:
                tx = read_transactions(d["transactions"], d.get("map") or None, date_format=d.get("date_format"),
                                       sheet=d.get("sheet"), delimiter=d.get("delimiter"),
                                       decimal_comma=d.get("decimal_comma", False))
                end = functools.partial(default_end, tx)
            if spec is None:
                spec = snapshot_spec(every=s.get("every"), periods=s.get("periods"), windows=s.get("window"),
                                     cohort=s.get("cohort"), default_end=end())
            table = None
            if self.customer_table is not None:
                reserved = frozenset(BUILTIN_FEATURES) | frozenset(self.registry.features)
                table = read_customers(self.customer_table, None, reserved=reserved)
            skipped = [str(f) for f in self.registry.failures] if skip_failing else None
            failed: dict[str, str] = {}
            snaps = snapshots_of(tx, spec, self.selections, registry=self.registry, customers=table,
                                 needs=self._needs(), skipped=skipped, skipped_classifiers=failed, keep="slim",
                                 collect=collect)
        snaps.skipped = list(dict.fromkeys(skipped or []))
        snaps.skipped_classifiers = failed
        # for the run's manifest (a plain attribute: how the snapshots came about, not what they are)
        snaps.provenance = {"as_of_from": "snapshots", "durations_s": {
            "read_features_and_classify": round(time.perf_counter() - started, 3)}}
        return snaps

    def evaluate_snapshots(self, snaps) -> Result:
        """Apply the rules to the last snapshot (with ``<label>_prev`` / ``<label>_change`` from the one before)
        and build the summary, with ``snapshots``, ``migration`` and ``kpis`` (no I/O)."""
        from ..snapshots import snapshot_summary

        started = time.perf_counter()
        customers = snaps.last
        prepared = Prepared(snaps.customers[-1], snaps.as_of[-1], snaps.report, self.registry)
        failed = snaps.skipped_classifiers
        empty = {o.column: name for s in self.selections if (name := s.classifier.name) in failed for o in s.outputs}
        # the last snapshot's classes were counted with its figures (the labels are the same with the *_prev
        # and *_change columns beside them)
        result = _playbook_result(self, prepared, customers, skipped_columns=empty, classes=snaps.last_classes())
        fits = {str(d): f for d, f in zip(snaps.as_of, snaps.fits) if f}
        if fits:
            result.summary["fits"] = fits
        if snaps.skipped:
            result.summary["skipped_plugins"] = snaps.skipped
        result.summary.update(snapshot_summary(snaps))
        result.snapshots = snaps
        provenance = getattr(snaps, "provenance", {})
        result.provenance = {**provenance, "durations_s": {**provenance.get("durations_s", {}),
                                                           "rules": round(time.perf_counter() - started, 3)}}
        return result

    def evaluate(self, prepared: Prepared, *, skip_failing: bool = False) -> Result:
        """Classify, apply the rules and build the summary (no I/O).

        With ``skip_failing`` a classifier that fails is skipped: its columns
        stay empty, a rule that reads one is not evaluated (it matches no one;
        ``summary["skipped_rules"]``), and ``summary["skipped_plugins"]`` names
        the classifier, with the plugins that failed to load.
        """
        started = time.perf_counter()
        skipped = [str(f) for f in self.registry.failures] if skip_failing else None
        failed: dict[str, str] = {}
        fits: dict[str, Any] = {}
        customers = apply_classifiers(prepared.customers, self.selections, as_of=prepared.as_of,
                                      registry=self.registry, skipped=skipped, skipped_classifiers=failed,
                                      fits=fits)
        empty = {o.column: name for s in self.selections if (name := s.classifier.name) in failed for o in s.outputs}
        result = _playbook_result(self, prepared, customers, skipped_columns=empty)
        if fits:  # what fitted classifiers estimated (parameters, standard errors, fit diagnostics)
            result.summary["fits"] = fits
        if skipped:
            result.summary["skipped_plugins"] = skipped
        durations = {**prepared.provenance.get("durations_s", {}),
                     "classify_and_rules": round(time.perf_counter() - started, 3)}
        result.provenance = {**prepared.provenance, "durations_s": durations}
        return result

    def run(self, *, as_of: str | dt.date | None = None, write: bool = True, force: bool = False) -> Result:
        """Prepare, evaluate and (unless ``write=False``) write the outputs atomically (``force``: see :meth:`write`)."""
        if self.snapshots is not None:
            result = self.evaluate_snapshots(self.compute_snapshots(as_of))
        else:
            result = self.evaluate(self.prepare(as_of))
        if write:
            self.write(result, force=force)
        return result

    def write(self, result: Result, *, force: bool = False) -> dict[str, Path]:
        """Write every output as one set: all of them change together, or (on any failure) none does.

        See :func:`engine.io.write_output_set`: the files are written into a new
        generation inside the output directory and switched in by one rename.
        Outputs another playbook wrote there, or outputs changed since they were
        written (they no longer match the manifest in the summary beside them),
        are not replaced (a :class:`~engine.errors.DataError`, nothing written)
        unless ``force``.
        """
        from .write import write_outputs

        return write_outputs(self, result, force=force)

    # -------------------------------------------------------------------- save
    def save(self, path: str | Path | None = None) -> str:
        """Write the current parameters into the playbook file, keeping comments and key order.

        Only parameter values that differ from the file are touched. Returns a
        unified diff of the change ("" when nothing changed).
        """
        from .save import save_params

        return save_params(self, path)
