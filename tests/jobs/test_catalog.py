"""The catalogs' bounds and choices come from the spec models' JSON schema (the same one ``/openapi.json`` shows)."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel

from jobs import spec as S
from jobs.catalog import datasets_catalog, losses_catalog, model_params, models_catalog


def params_of(catalog: list[dict], name: str) -> dict[str, dict]:
    entry = next(e for e in catalog if e["name"] == name)
    return {p["name"]: p for p in entry["parameters"]}


@pytest.mark.parametrize(
    ("catalog", "entry", "param", "bounds"),
    [
        (losses_catalog, "focal", "gamma", {"ge": 0}),
        (losses_catalog, "label_smoothing", "epsilon", {"ge": 0, "lt": 1}),
        (losses_catalog, "ib", "alpha", {"gt": 0}),
        (losses_catalog, "ib", "start_epoch", {"ge": 0, "le": S.MAX_EPOCHS}),
        (losses_catalog, "seql", "lambda_", {"ge": 0, "le": 1}),
        (losses_catalog, "ldam", "scale", {"gt": 0}),
        (models_catalog, "mlp", "dropout", {"ge": 0, "lt": 1}),
    ],
)
def test_searchable_fields_list_their_bounds(catalog, entry, param, bounds) -> None:
    got = params_of(catalog(), entry)[param]
    assert got["searchable"] is True
    assert {k: got[k] for k in ("ge", "gt", "le", "lt") if k in got} == bounds


def test_training_fields_list_bounds_and_choices() -> None:
    params = {p["name"]: p for p in model_params(S.TrainSpec)}
    assert {k: params["lr"][k] for k in ("gt", "le")} == {"gt": 0, "le": 10} and "ge" not in params["lr"]
    assert {k: params["batch_size"][k] for k in ("ge", "le")} == {"ge": 1, "le": 65536}
    assert params["optimizer"]["choices"] == ["sgd", "adamw"] and params["optimizer"]["searchable"] is True


def test_the_json_schema_publishes_the_bounds_of_the_value_alternative() -> None:
    class Probe(BaseModel):
        a: Annotated[S.FloatOrDomain, S.Bounds(gt=0, lt=2)] = 1.0
        b: Annotated[S.IntOrDomain, S.Bounds(ge=1, le=9, integer=True)] = 1
        c: Annotated[S.StrOrDomain, S.OneOf("x", "y")] = "x"

    props = Probe.model_json_schema()["properties"]
    value = {name: next(o for o in prop["oneOf"] if "$ref" not in o) for name, prop in props.items()}
    assert value["a"] == {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 2}
    assert value["b"] == {"type": "integer", "minimum": 1, "maximum": 9}
    assert value["c"] == {"type": "string", "enum": ["x", "y"]}
    # Only the schema shows them: the validator still checks values and domains, with its own messages.
    assert Probe(a={"uniform": [0.5, 1.5]}, b={"randint": [1, 10]}, c={"choice": ["y"]}).b.randint == (1, 10)
    with pytest.raises(ValueError, match="must be < 2, got 3"):
        Probe(a={"uniform": [1, 3]})
    with pytest.raises(ValueError, match="must be <= 9, got 10"):
        Probe(b={"randint": [1, 11]})
    with pytest.raises(ValueError, match="expected one of"):
        Probe(c="z")
    with pytest.raises(TypeError):
        S.Bounds(minimum=0)  # type: ignore[call-arg]  # a bound by its pydantic name only


def test_datasets_catalog_bounds() -> None:
    params = params_of(datasets_catalog(), "digits_lt")
    assert params["imbalance_factor"]["ge"] == 1 and params["seed"] == {**params["seed"], "ge": 0, "lt": S.SEED_LIMIT}
