"""engine.classifier: the contracts of Classifier, Output and Feature."""

from __future__ import annotations

import polars as pl
import pytest

from engine import Classifier, Feature, Output, ParamError, ParamSpec


def make(**kw):
    base = dict(name="demo", description="a demo", outputs=(Output("demo", "x", labels=("hi", "lo")),),
                params=(ParamSpec("lo", "int", 1, "Low.", min=0), ParamSpec("hi", "int", 5, "High.", min=0)),
                requires=("monetary",), expressions=lambda p, ctx: {"demo": pl.lit("hi")})
    base.update(kw)
    return Classifier(**base)


def test_output_labels_make_an_enum():
    out = Output("tier", "a tier", labels=["gold", "silver"])
    assert out.labels == ("gold", "silver")
    assert out.polars_dtype == pl.Enum(["gold", "silver"])
    assert Output("score", "a score", dtype=pl.Int8).polars_dtype == pl.Int8


@pytest.mark.parametrize("kw, message", [
    ({"labels": ()}, "labels must be non-empty and unique"),
    ({"labels": ("a", "a")}, "labels must be non-empty and unique"),
    ({}, "give labels or a dtype"),
])
def test_bad_outputs(kw, message):
    with pytest.raises(ValueError, match=message):
        Output("x", "x", **kw)


def test_classifier_contract():
    with pytest.raises(ValueError, match="must be an identifier"):
        make(name="my-classifier")
    with pytest.raises(ValueError, match="duplicate parameter names"):
        make(params=(ParamSpec("a", "int", 1, "A."), ParamSpec("a", "int", 2, "A again.")))
    c = make(params=[ParamSpec("a", "int", 1, "A.")], requires=["monetary"])
    assert c.params == (ParamSpec("a", "int", 1, "A."),) and c.requires == ("monetary",)
    assert c.param("a").default == 1
    with pytest.raises(KeyError):
        c.param("b")
    assert c.labels == ("hi", "lo")


def test_resolve_with_a_cross_check_names_the_source():
    def check(p):
        if p["lo"] >= p["hi"]:
            raise ValueError(f"lo ({p['lo']}) must be below hi ({p['hi']})")

    c = make(check=check)
    assert c.resolve({"lo": "2"}) == {"lo": 2, "hi": 5}
    with pytest.raises(ParamError, match=r"^demo: lo \(7\) must be below hi \(5\)$"):
        c.resolve({"lo": 7})
    with pytest.raises(ParamError, match=r"^play.yaml:3: demo: lo \(7\) must be below hi \(5\)$"):
        c.resolve({"lo": 7}, sources={"lo": "play.yaml:3"})


def test_outputs_may_depend_on_parameters():
    c = make(outputs=lambda p: (Output("demo", "x", labels=tuple(f"L{i}" for i in range(p["hi"]))),))
    assert c.output_specs()[0].labels == ("L0", "L1", "L2", "L3", "L4")
    assert c.output_specs({"lo": 0, "hi": 2})[0].labels == ("L0", "L1")


def test_feature_takes_exactly_one_of_agg_table_and_derive():
    with pytest.raises(ValueError, match="exactly one of agg=, table= and derive="):
        Feature("f", "f")
    with pytest.raises(ValueError, match="exactly one of agg=, table= and derive="):
        Feature("f", "f", agg=pl.len(), derive=pl.lit(1))
    with pytest.raises(ValueError, match="exactly one of agg=, table= and derive="):
        Feature("f", "f", agg=pl.len(), table=lambda rows: rows)
    with pytest.raises(ValueError, match="must be an identifier"):
        Feature("my feature", "f", agg=pl.len())
