"""A classifier's own workbench fast path: an incremental evaluator and its charts.

The workbench (:mod:`engine.widgets`) recounts classes every time a control
moves. Without help it re-runs the classifier's expressions over the whole
customer table, which is correct for every classifier and fast enough for tens
of thousands of customers. A classifier that wants more gives itself a fast
path: the optional ``workbench`` field of :class:`~engine.classifier.Classifier`,
a callable ``workbench(classifier, table) -> FastPath``. The workbench calls it
once per customer table (and again when ``as_of`` moves); the returned object
keeps whatever does not depend on the parameters (a sort, ranks, a histogram)
and answers three questions for any parameter set:

:meth:`FastPath.counts`
    Customers and revenue per label of every class output (what the workbench
    shows first, on every move: this is the part that must be fast).
:meth:`FastPath.columns`
    The output columns themselves, exactly as the classifier's expressions
    compute them (for the rules, the sample customers and the saved result).
:meth:`FastPath.charts`
    Optional :class:`Chart` objects; without any, the workbench draws a
    class-size bar chart per class output.

:meth:`FastPath.supports` lets a fast path decline a parameter set it does not
implement (a parameter added later, a mode it does not know): the workbench
then takes the generic path for that set. A fast path must never give another
answer than the expressions: :func:`check_fast_path` compares the two, and a
plugin's tests call it on random parameter moves.

Import the fast path lazily from the ``workbench`` callable (NumPy, matplotlib):
the command line never needs it.

Examples
--------
A fast path for a classifier with one threshold (this one only keeps a NumPy
copy of its feature; a real one keeps what makes a move cheap, such as a sort):

>>> import numpy as np, polars as pl
>>> from engine import Classifier, Output, ParamSpec
>>> class BigFast(FastPath):
...     def __init__(self, classifier, table):
...         super().__init__(classifier, table)
...         self.m = table.customers["monetary"].fill_null(float("-inf")).to_numpy()  # kept across moves
...     def codes(self, params):
...         return np.where(self.m >= params["min"], 0, 1)
...     def counts(self, params):
...         return {"size": self.tally(self.codes(params), 2)}
...     def columns(self, params):
...         return {"size": enum_series(("big", "small"), self.codes(params), "size")}
>>> BIG = Classifier(name="big", description="big spenders", outputs=(Output("size", "", labels=("big", "small")),),
...     params=(ParamSpec("min", "float", 100.0, "Least monetary of a big spender.", min=0, max=1000),),
...     requires=("monetary",),
...     expressions=lambda p, ctx: {"size": pl.when(pl.col("monetary") >= p["min"]).then(pl.lit("big"))
...                                         .otherwise(pl.lit("small"))},
...     workbench=BigFast)
>>> import datetime as dt
>>> customers = pl.DataFrame({"customer_id": [1, 2, 3], "monetary": [50.0, 150.0, 300.0]})
>>> check_fast_path(BIG, customers, [{"min": 100.0}, {"min": 200.0}], as_of=dt.date(2024, 1, 1))
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from .classifier import Classifier

__all__ = ["Table", "FastPath", "Chart", "Overlay", "enum_series", "figure", "png", "check_fast_path"]


@dataclass(frozen=True)
class Table:
    """The customer table a fast path works on; fixed while the parameters move.

    ``weights`` is every customer's revenue (``monetary``, nulls as 0), in table
    order: the revenue of a class is the sum of its customers' weights.
    ``registry`` is the plugin registry the table was prepared with.
    """

    customers: pl.DataFrame
    as_of: dt.date
    weights: np.ndarray
    registry: Any = None

    @property
    def n(self) -> int:
        """Number of customers."""
        return self.customers.height

    @classmethod
    def of(cls, customers: pl.DataFrame, as_of: dt.date, registry: Any = None) -> Table:
        """The table with its weights computed from ``monetary`` (zeros without it)."""
        if "monetary" in customers.columns:
            weights = customers["monetary"].cast(pl.Float64).fill_null(0.0).to_numpy()
        else:
            weights = np.zeros(customers.height)
        return cls(customers, as_of, weights, registry)


@dataclass(frozen=True)
class Chart:
    """One chart of a classifier in the workbench.

    ``name`` identifies the chart (one image per name); ``key`` is what the
    chart shows, any value that compares equal when the picture would be the
    same (the workbench redraws only when it changes); ``draw()`` returns the
    PNG bytes (see :func:`figure` and :func:`png`).
    """

    name: str
    key: Hashable
    draw: Callable[[], bytes]


class FastPath:
    """Base class of a classifier's incremental evaluator (see the module docstring).

    Subclass it, keep what does not depend on the parameters in ``__init__``,
    and override :meth:`counts` and :meth:`columns` (and optionally
    :meth:`supports` and :meth:`charts`). ``params`` are always resolved and
    checked by the classifier (:meth:`Classifier.resolve`).
    """

    def __init__(self, classifier: Classifier, table: Table):
        self.classifier = classifier
        self.table = table

    def supports(self, params: Mapping[str, Any]) -> bool:
        """Whether this fast path implements ``params``; otherwise the generic path is used."""
        return True

    def counts(self, params: Mapping[str, Any]) -> Mapping[str, tuple[np.ndarray, np.ndarray]]:
        """``{column: (customers, revenue)}`` for each class output.

        Both arrays have one entry per label (in the output's label order) and
        a last one for customers without a label (null).
        """
        raise NotImplementedError

    def columns(self, params: Mapping[str, Any]) -> Mapping[str, pl.Series]:
        """Every output column, equal to what the classifier's expressions compute."""
        raise NotImplementedError

    def label_codes(self, params: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
        """``{column: codes}`` for each class output: each customer's label as its position in the
        output's labels, ``len(labels)`` for null (what :meth:`columns` holds, as integers).

        The workbench counts rule hits and picks sample customers from these, so a move need not build
        the label columns. By default they are read from :meth:`columns`; a fast path that has the codes
        at hand returns them directly (they must be exactly the columns' codes: :func:`check_fast_path`
        compares them).
        """
        cols = self.columns(params)
        out = {}
        for o in self.classifier.output_specs(params):
            if o.labels is not None:
                out[o.column] = _label_codes(cols[o.column], o.labels)
        return out

    def charts(self, params: Mapping[str, Any]) -> Sequence[Chart]:
        """The classifier's charts for ``params`` (none by default: the workbench draws class sizes)."""
        return ()

    def tally(self, codes: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        """Customers and revenue per code ``0 .. n_labels`` (``n_labels``: no label)."""
        counts = np.bincount(codes, minlength=n_labels + 1)
        revenue = np.bincount(codes, weights=self.table.weights, minlength=n_labels + 1)
        return counts, revenue


def _label_codes(series: pl.Series, labels: Sequence[str]) -> np.ndarray:
    """A label column as codes (see :meth:`FastPath.label_codes`); a value outside ``labels`` is an error."""
    from .playbook.live import label_codes

    codes = label_codes(series, labels)
    if codes is None:
        raise ValueError(f"column {series.name!r} holds a value that is not one of its labels ({', '.join(labels)})")
    return codes


def enum_series(labels: Sequence[str], codes: np.ndarray, name: str) -> pl.Series:
    """A class column from codes (``len(labels)`` means null), as the engine stores it (``pl.Enum``)."""
    values = pl.Series(name, [*labels, None], dtype=pl.Enum(list(labels)))
    return values.gather(pl.Series(np.asarray(codes).astype(np.uint32)))


def figure(width: float, height: float):
    """A matplotlib ``Figure`` (Agg canvas, no pyplot state) for a chart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


class Overlay:
    """A chart kept as a picture of its fixed part, with the moving artists drawn over it on each redraw.

    The axes, ticks, labels and title of a workbench chart rarely change while a slider moves; drawing
    their text is most of a matplotlib render. ``Overlay(fig)`` draws the figure once without the
    artists passed to :meth:`render` (they are marked animated), keeps that picture, and each
    :meth:`render` puts the picture back and draws only those artists over it, in the order given
    (matplotlib's blitting). Make a new ``Overlay`` when the fixed part changes.
    """

    def __init__(self, fig):
        self.fig = fig
        self.background = None

    def render(self, artists: Sequence[Any]) -> bytes:
        """PNG bytes of the fixed part with ``artists`` drawn over it."""
        canvas = self.fig.canvas
        for artist in artists:
            artist.set_animated(True)
        if self.background is None:
            canvas.draw()  # the animated artists are left out of it
            self.background = canvas.copy_from_bbox(self.fig.bbox)
        else:
            canvas.restore_region(self.background)
        for artist in artists:
            self.fig.draw_artist(artist)
        return _encode(canvas)


def _encode(canvas) -> bytes:
    from PIL import Image

    width, height = canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png(fig) -> bytes:
    """The figure as PNG bytes: drawn on its Agg canvas, encoded by Pillow at zlib level 1.

    ``savefig`` draws the figure once more and compresses harder; this is the same picture in about
    half the time. A chart redrawn on every move keeps its figure instead (building a figure and laying
    it out costs more than drawing it) and draws only what moves (:class:`Overlay`).
    """
    fig.canvas.draw()
    return _encode(fig.canvas)


def check_fast_path(classifier: Classifier, customers: pl.DataFrame, params: Iterable[Mapping[str, Any]], *,
                    as_of: dt.date, registry: Any = None, rel_tol: float = 1e-9) -> None:
    """Raise ``AssertionError`` unless the classifier's fast path equals its expressions.

    For each parameter set (given over the defaults) that the fast path
    supports, the columns must equal the expressions' output exactly, and the
    counts and revenues per label the counts of those columns (revenue up to
    ``rel_tol``). Sets it declines are skipped; a plugin's tests should also
    check that the ones it means to support are supported.
    """
    from polars.testing import assert_series_equal

    from .run import Selection, apply_classifiers

    if classifier.workbench is None:
        raise AssertionError(f"classifier {classifier.name!r} has no workbench fast path")
    table = Table.of(customers, as_of, registry)
    fast = classifier.workbench(classifier, table)
    for given in params:
        p = classifier.resolve(dict(given))
        if not fast.supports(p):
            continue
        sel = Selection(classifier, p)
        expected = apply_classifiers(customers, [sel], as_of=as_of, registry=registry)
        got = fast.columns(p)
        counts = fast.counts(p)
        for out in classifier.output_specs(p):
            try:
                assert_series_equal(got[out.column].alias(out.column), expected[out.column])
            except AssertionError as exc:
                raise AssertionError(f"{classifier.name} {dict(given)}: column {out.column}: {exc}") from None
            if out.labels is None:
                continue
            codes = expected[out.column].to_physical().fill_null(len(out.labels)).cast(pl.Int64).to_numpy()
            want_n = np.bincount(codes, minlength=len(out.labels) + 1)
            want_rev = np.bincount(codes, weights=table.weights, minlength=len(out.labels) + 1)
            have_codes = np.asarray(fast.label_codes(p)[out.column])
            if not np.array_equal(have_codes, codes):
                raise AssertionError(f"{classifier.name} {dict(given)}: {out.column} codes differ from the "
                                     f"column's at {int(np.flatnonzero(have_codes != codes)[0])}")
            have_n, have_rev = counts[out.column]
            if not np.array_equal(np.asarray(have_n), want_n):
                raise AssertionError(f"{classifier.name} {dict(given)}: {out.column} counts {list(have_n)}, "
                                     f"expected {list(want_n)}")
            if not np.allclose(have_rev, want_rev, rtol=rel_tol, atol=1e-6):
                raise AssertionError(f"{classifier.name} {dict(given)}: {out.column} revenue {list(have_rev)}, "
                                     f"expected {list(want_rev)}")
