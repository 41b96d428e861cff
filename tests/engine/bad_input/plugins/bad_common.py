"""Shared helper of the misbehaving plugins: a classifier with one class column ``column``."""

from __future__ import annotations

from engine import Classifier, Output


def classifier(name: str, expressions, *, labels=("good", "bad"), requires=("monetary",), dtype=None) -> Classifier:
    out = Output(name, f"{name} (a misbehaving test classifier)", labels=None if dtype else labels, dtype=dtype)
    return Classifier(name=name, description=f"misbehaving test classifier {name}", outputs=(out,), params=(),
                      requires=requires, expressions=expressions)
