"""tierbook's core: load transactions, compute customer features, classify through plugins.

The public API, for scripts and notebooks::

    import engine
    customers = engine.classify("sales.parquet", mapping={"customer_id": "CustomerID", ...})
    customers.to_pandas()  # for pandas users

and, for plugin authors::

    from engine import Classifier, Output, ParamSpec, hookimpl
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DataError, ParamError, PlaybookError, PluginError, TierbookError

if TYPE_CHECKING:  # what editors and type checkers see; at run time these load on first use (_LAZY)
    from .classifier import Classifier, Context, Feature, Output
    from .hookspecs import hookimpl
    from .params import ParamSpec
    from .playbook import load_playbook
    from .registry import get_registry
    from .run import classify, classify_frame, prepare, summarize
    from .sample import sample_path

__all__ = [
    "Classifier",
    "Context",
    "Feature",
    "Output",
    "ParamSpec",
    "hookimpl",
    "TierbookError",
    "DataError",
    "ParamError",
    "PluginError",
    "PlaybookError",
    "classify",
    "classify_frame",
    "prepare",
    "summarize",
    "get_registry",
    "sample_path",
    "load_playbook",
]

_LAZY = {
    "Classifier": ("classifier", "Classifier"),
    "Context": ("classifier", "Context"),
    "Feature": ("classifier", "Feature"),
    "Output": ("classifier", "Output"),
    "ParamSpec": ("params", "ParamSpec"),
    "hookimpl": ("hookspecs", "hookimpl"),
    "classify": ("run", "classify"),
    "classify_frame": ("run", "classify_frame"),
    "prepare": ("run", "prepare"),
    "summarize": ("run", "summarize"),
    "get_registry": ("registry", "get_registry"),
    "sample_path": ("sample", "sample_path"),
    "load_playbook": ("playbook", "load_playbook"),
}


def __dir__() -> list[str]:
    # dir(engine) and completion in a REPL or notebook list the public API, lazy names included.
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    # Everything that needs Polars is imported on first use, so `import engine` (and with it
    # `tierbook --help`) does not pay for importing Polars.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
