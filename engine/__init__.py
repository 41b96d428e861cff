"""tierbook's core: load transactions, compute customer features, classify through plugins.

The public API, for scripts and notebooks::

    import engine
    customers = engine.classify("sales.parquet", mapping={"customer_id": "CustomerID", ...})
    customers.to_pandas()  # for pandas users

and, for plugin authors::

    from engine import Classifier, Output, ParamSpec, hookimpl
"""

from __future__ import annotations

from .errors import DataError, ParamError, PlaybookError, PluginError, TierbookError

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
