"""A plugin that fails when imported."""

raise ImportError("cannot import name 'Model' from 'sklearn_missing'")
