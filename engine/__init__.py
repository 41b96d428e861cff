"""tierbook's core: load transactions, compute customer features, classify through plugins.

The public API, for scripts and notebooks::

    import engine
    customers = engine.classify("sales.parquet", mapping={"customer_id": "CustomerID", ...})
    customers.to_pandas()  # for pandas users

and, for plugin authors::

    from engine import Classifier, Output, ParamSpec, hookimpl
"""

from __future__ import annotations

from .classifier import Classifier, Context, Feature, Output
from .errors import DataError, ParamError, PlaybookError, PluginError, TierbookError
from .hookspecs import hookimpl
from .params import ParamSpec

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
    "classify": ("run", "classify"),
    "classify_frame": ("run", "classify_frame"),
    "prepare": ("run", "prepare"),
    "summarize": ("run", "summarize"),
    "get_registry": ("registry", "get_registry"),
    "sample_path": ("sample", "sample_path"),
    "load_playbook": ("playbook", "load_playbook"),
}


def __getattr__(name: str):
    # The pipeline is imported on first use, so `import engine` (and a plugin's
    # `from engine import hookimpl`) stays light.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
