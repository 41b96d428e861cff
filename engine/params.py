"""Typed parameter specifications.

A :class:`ParamSpec` is the single description of a classifier parameter. The
same spec validates a value from a playbook, parses a ``--set name=value`` from
the command line, builds the notebook control and the JSON Schema, so the four
can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ParamError, suggest

__all__ = ["ParamSpec", "resolve_params"]

_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "mapping": dict}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a classifier.

    Parameters
    ----------
    name
        Identifier, unique within its classifier.
    type
        ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or ``"mapping"`` (a YAML
        mapping, settable from playbooks only).
    default
        The value used when none is given; it must itself be valid.
    help
        One sentence saying what the parameter changes. Required.
    min, max
        Inclusive bounds for numbers.
    step
        Granularity of a slider in the notebook workbench.
    choices
        Allowed values of a ``str`` parameter.
    feature
        ``True`` when a ``str`` value names a numeric column of the customer
        table (checked when the table is known).
    check
        Extra validation of a ``mapping`` value; raises ``ValueError`` with a
        message when the value is bad.

    Examples
    --------
    >>> spec = ParamSpec("a", "float", 0.8, "Cumulative revenue share of A.", min=0, max=1)
    >>> spec.validate("0.75", source="--set abc.a")
    0.75
    >>> spec.validate(1.5, source="--set abc.a")
    Traceback (most recent call last):
    ...
    engine.errors.ParamError: --set abc.a: 1.5 is above the maximum 1 of 'a'
    """

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    feature: bool = False
    check: Callable[[Any], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"ParamSpec {self.name!r}: unknown type {self.type!r}")
        if not self.help or not self.help.strip():
            raise ValueError(f"ParamSpec {self.name!r}: help text is required")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        # The default must pass its own validation: a broken spec fails at import.
        self.validate(self.default, source=f"default of {self.name!r}")

    # ------------------------------------------------------------------ values
    def validate(self, value: Any, *, source: str = "") -> Any:
        """Return ``value`` coerced to this spec's type, or raise :class:`ParamError`.

        Strings are parsed (they come from the command line); YAML numbers and
        booleans are checked strictly (``true`` is not an int, ``"x"`` not a float).
        """
        kind = self.type
        original = value

        def error(reason: str) -> ParamError:
            return ParamError(reason, source=source or None, param=self.name, value=original)

        if isinstance(value, str) and kind in ("int", "float", "bool"):
            value = self._parse(value.strip(), error, original)
        if kind == "bool":
            if not isinstance(value, bool):
                raise error(f"{original!r} is not a boolean for {self.name!r} (use true or false)")
            return value
        if kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise error(f"{original!r} is not a number for {self.name!r}")
            if kind == "int":
                if isinstance(value, float):
                    if not value.is_integer():
                        raise error(f"{original!r} is not a whole number for {self.name!r}")
                    value = int(value)
            else:
                value = float(value)
                if not math.isfinite(value):
                    raise error(f"{original!r} is not a finite number for {self.name!r}")
            if self.min is not None and value < self.min:
                raise error(f"{original!r} is below the minimum {_num(self.min)} of {self.name!r}")
            if self.max is not None and value > self.max:
                raise error(f"{original!r} is above the maximum {_num(self.max)} of {self.name!r}")
            return value
        if kind == "str":
            if not isinstance(value, str):
                raise error(f"{original!r} is not a string for {self.name!r}")
            if self.choices is not None and value not in self.choices:
                allowed = ", ".join(self.choices)
                raise error(f"{value!r} is not one of {allowed} for {self.name!r}{suggest(value, self.choices)}")
            return value
        # mapping; from the command line in YAML's flow style: --set 'rfm.segment_codes={Top: ["44*"]}'
        if isinstance(value, str):
            value = _flow_mapping(value)
        if not isinstance(value, Mapping):
            raise error(f"{original!r} is not a mapping for {self.name!r} (set it in a playbook, or as "
                        f"{{key: value, ...}})")
        value = dict(value)
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                raise error(f"bad value for {self.name!r}: {exc}") from None
        return value

    def _parse(self, text: str, error: Callable[[str], ParamError], original: Any) -> Any:
        if self.type == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise error(f"{original!r} is not a boolean for {self.name!r} (use true or false)")
        try:
            number = float(text) if self.type == "float" else int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise error(f"{original!r} is not a number for {self.name!r}") from None
        return number

    # ---------------------------------------------------------------- describe
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this parameter's value.

        >>> ParamSpec("bins", "int", 5, "Number of score bins.", min=2, max=10).json_schema()
        {'type': 'integer', 'default': 5, 'description': 'Number of score bins.', 'minimum': 2, 'maximum': 10}
        """
        kind = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "mapping": "object"}
        schema: dict[str, Any] = {"type": kind[self.type], "default": self.default, "description": self.help}
        if self.min is not None:
            schema["minimum"] = self.min
        if self.max is not None:
            schema["maximum"] = self.max
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        return schema

    def describe(self) -> dict[str, Any]:
        """A plain dict for listings (``tierbook plugins --json``)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.default, "help": self.help}
        for key in ("min", "max", "step", "choices"):
            if getattr(self, key) is not None:
                out[key] = list(self.choices) if key == "choices" else getattr(self, key)
        if self.feature:
            out["feature"] = True
        return out


def resolve_params(
    specs: Sequence[ParamSpec], values: Mapping[str, Any], *, owner: str, sources: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merge ``values`` over the specs' defaults, validating each one.

    ``owner`` names the classifier in messages; ``sources`` maps a parameter
    name to where its value came from (``"playbook.yaml:12"``, ``"--set"``).

    >>> specs = [ParamSpec("a", "float", 0.8, "A share.", min=0, max=1)]
    >>> resolve_params(specs, {}, owner="abc")
    {'a': 0.8}
    >>> resolve_params(specs, {"b": 1}, owner="abc")
    Traceback (most recent call last):
    ...
    engine.errors.ParamError: abc: unknown parameter 'b' (known: a)
    """
    by_name = {s.name: s for s in specs}
    sources = sources or {}
    out = {s.name: s.default for s in specs}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            known = ", ".join(by_name) or "none"
            raise ParamError(f"{owner}: unknown parameter {name!r}{suggest(name, by_name)} (known: {known})",
                             source=sources.get(name), classifier=owner, param=name, value=value)
        out[name] = spec.validate(value, source=sources.get(name, f"{owner}.{name}"))
    return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _flow_mapping(text: str) -> Any:
    """A mapping written as YAML flow text (``{a: [1, 2]}``), or ``text`` itself when it is not one.

    >>> _flow_mapping('{Top: ["444", "44*"], Other: []}')
    {'Top': ['444', '44*'], 'Other': []}
    >>> _flow_mapping("x")
    'x'
    """
    if not text.strip().startswith("{"):
        return text
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, dict) else text
