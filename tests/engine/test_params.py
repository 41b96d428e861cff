"""engine.params: one ParamSpec validates playbook values and command-line text alike."""

from __future__ import annotations

import pytest

from engine import ParamError, ParamSpec
from engine.params import resolve_params

A = ParamSpec("a", "float", 0.8, "Cumulative share of A.", min=0, max=1, step=0.01)
BINS = ParamSpec("bins", "int", 5, "Number of bins.", min=2, max=10)
FLAG = ParamSpec("flag", "bool", True, "A switch.")
MODE = ParamSpec("mode", "str", "share", "How to cut.", choices=("share", "rank"))


def check_even(value):
    if len(value) % 2:
        raise ValueError("needs an even number of entries")


GRID = ParamSpec("grid", "mapping", {}, "A mapping.", check=check_even)


@pytest.mark.parametrize(
    "spec, given, expected",
    [
        (A, 0.5, 0.5), (A, "0.75", 0.75), (A, 1, 1.0), (A, " 0 ", 0.0), (A, "1", 1.0),
        (BINS, 3, 3), (BINS, "7", 7), (BINS, 4.0, 4), (BINS, "4.0", 4), (BINS, 2, 2), (BINS, 10, 10),
        (FLAG, False, False), (FLAG, "yes", True), (FLAG, "Off", False), (FLAG, "1", True), (FLAG, "false", False),
        (MODE, "rank", "rank"),
        (GRID, {"x": 1, "y": 2}, {"x": 1, "y": 2}),
    ],
)
def test_valid_values_are_coerced(spec, given, expected):
    got = spec.validate(given, source="--set")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "spec, given, message",
    [
        (A, 1.5, "--set: 1.5 is above the maximum 1 of 'a'"),
        (A, "-0.1", "--set: '-0.1' is below the minimum 0 of 'a'"),
        (A, "lots", "--set: 'lots' is not a number for 'a'"),
        (A, "nan", "--set: 'nan' is not a finite number for 'a'"),
        (A, True, "--set: True is not a number for 'a'"),
        (BINS, 1, "--set: 1 is below the minimum 2 of 'bins'"),
        (BINS, 11, "--set: 11 is above the maximum 10 of 'bins'"),
        (BINS, 2.5, "--set: 2.5 is not a whole number for 'bins'"),
        (BINS, "2.5", "--set: '2.5' is not a whole number for 'bins'"),
        (FLAG, "maybe", "--set: 'maybe' is not a boolean for 'flag' (use true or false)"),
        (FLAG, 1, "--set: 1 is not a boolean for 'flag' (use true or false)"),
        (MODE, "rnak", "--set: 'rnak' is not one of share, rank for 'mode' (did you mean 'rank'?)"),
        (MODE, 3, "--set: 3 is not a string for 'mode'"),
        (GRID, "x", "--set: 'x' is not a mapping for 'grid' (set it in a playbook, or as {key: value, ...})"),
        (GRID, {"x": 1}, "--set: bad value for 'grid': needs an even number of entries"),
    ],
)
def test_bad_values_say_where_what_and_why(spec, given, message):
    with pytest.raises(ParamError) as info:
        spec.validate(given, source="--set")
    assert str(info.value) == message


def test_a_spec_must_be_valid_itself():
    with pytest.raises(ValueError, match="unknown type 'number'"):
        ParamSpec("x", "number", 1, "help")
    with pytest.raises(ValueError, match="help text is required"):
        ParamSpec("x", "int", 1, "  ")
    with pytest.raises(ParamError, match="default of 'x'"):
        ParamSpec("x", "int", 20, "An x.", max=10)


def test_resolve_params_merges_over_defaults():
    assert resolve_params([A, BINS], {"bins": "3"}, owner="rfm") == {"a": 0.8, "bins": 3}
    with pytest.raises(ParamError, match=r"^playbook.yaml:4: rfm: unknown parameter 'binz' \(did you mean 'bins'\?\) "
                                         r"\(known: a, bins\)$"):
        resolve_params([A, BINS], {"binz": 3}, owner="rfm", sources={"binz": "playbook.yaml:4"})
    with pytest.raises(ParamError, match=r"^playbook.yaml:7: 0 is below the minimum 2 of 'bins'$"):
        resolve_params([A, BINS], {"bins": 0}, owner="rfm", sources={"bins": "playbook.yaml:7"})
    with pytest.raises(ParamError, match=r"^rfm.bins: 0 is below"):
        resolve_params([A, BINS], {"bins": 0}, owner="rfm")


def test_json_schema_and_description():
    assert MODE.json_schema() == {"type": "string", "default": "share", "description": "How to cut.",
                                  "enum": ["share", "rank"]}
    assert FLAG.json_schema()["type"] == "boolean"
    assert GRID.json_schema()["type"] == "object"
    assert A.describe() == {"name": "a", "type": "float", "default": 0.8, "help": "Cumulative share of A.",
                            "min": 0, "max": 1, "step": 0.01}
    assert MODE.describe()["choices"] == ["share", "rank"]
    assert ParamSpec("metric", "str", "monetary", "Column.", feature=True).describe()["feature"] is True
