"""Catalogs for ``GET /losses``, ``/datasets``, ``/models``: the registries of ``lt_core`` joined with the spec models.

Each entry lists its parameters as the JobSpec takes them, with type, default, bounds, description and whether the
parameter accepts a search domain (``{"choice": ...}``, ``{"uniform": ...}``, ...), so a client can build a form.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from jobs import spec as S
from lt_core.datasets import DATASETS
from lt_core.losses import LOSSES
from lt_core.models import MODELS

_DOMAIN_REFS = {f"#/$defs/{m.__name__}" for m in (S.Choice, S.Grid, S.Uniform, S.LogUniform, S.RandInt, S.QUniform)}
_BOUND_KEYS = {"minimum": "ge", "exclusiveMinimum": "gt", "maximum": "le", "exclusiveMaximum": "lt"}
_SKIP = frozenset({"name"})


def _json_type(prop: dict[str, Any]) -> str:
    if "type" in prop:
        t = prop["type"]
        if t == "array":
            return f"array<{_json_type(prop.get('items', {}))}>"
        return t
    if "enum" in prop:
        return "enum"
    if "const" in prop:
        return "const"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            types = [_json_type(p) for p in prop[key] if p.get("$ref") not in _DOMAIN_REFS]
            types = [t for t in types if t != "null"] or ["null"]
            nullable = any(p.get("type") == "null" for p in prop[key])
            return "|".join(dict.fromkeys(types)) + ("|null" if nullable and "null" not in types else "")
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    return "any"


def _bounds(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's bounds from its JSON schema: its own, or its value alternative's (a searchable field, whose bounds
    apply to every value a domain can take too)."""
    bounds = {short: prop[key] for key, short in _BOUND_KEYS.items() if key in prop}
    for option in prop.get("anyOf", []) + prop.get("oneOf", []):
        bounds.update({short: option[key] for key, short in _BOUND_KEYS.items() if key in option})
    return bounds


def model_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Parameters of a spec model from its JSON schema: types, defaults, bounds and choices."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        if name in _SKIP:
            continue
        options = prop.get("anyOf", []) + prop.get("oneOf", [])
        entry: dict[str, Any] = {
            "name": name,
            "type": _json_type(prop),
            "required": name in required,
            "searchable": any(o.get("$ref") in _DOMAIN_REFS for o in options),
            "description": prop.get("description") or "",
        }
        if name not in required:
            field = model.model_fields[name]
            entry["default"] = field.get_default(call_default_factory=True)
            if isinstance(entry["default"], BaseModel):
                entry["default"] = entry["default"].model_dump(mode="json")
        enum = prop.get("enum") or next((o["enum"] for o in options if "enum" in o), None)
        if enum:
            entry["choices"] = enum
        entry.update(_bounds(prop))
        params.append(entry)
    return params


@lru_cache(maxsize=1)
def losses_catalog() -> list[dict[str, Any]]:
    """One entry per loss branch kind (``losses[i].name``)."""
    out = []
    for name, model in S.BRANCH_MODELS.items():
        info = LOSSES[name]  # the spec models and the registry are kept in sync by tests/jobs/test_spec.py
        out.append(
            {
                "name": name,
                "description": info.description or inspect.getdoc(model) or "",
                "needs_class_counts": info.needs_class_counts,
                "needs_features": info.needs_features,
                "parameters": model_params(model),
                "loss_parameters": sorted(k for k in model.model_fields if k not in model.TRAINING_FIELDS),
            }
        )
    return out


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    from typing import get_args

    members: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        item = stack.pop(0)
        if isinstance(item, type) and issubclass(item, BaseModel):
            members.append(item)
        else:
            stack.extend(get_args(item))
    return members


@lru_cache(maxsize=1)
def datasets_catalog() -> list[dict[str, Any]]:
    """One entry per dataset (``dataset.name``); ``path_params`` are resolved under the service's data root."""
    out = []
    for model in _union_members(S.DatasetSpec):
        name = S.registry_name(model)
        info = DATASETS[name]
        out.append(
            {
                "name": name,
                "description": info.description or inspect.getdoc(model) or "",
                "path_params": list(info.path_params),
                "path_kinds": dict(getattr(model, "PATH_FIELDS", {})),
                "parameters": model_params(model),
            }
        )
    return out


def _timm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


@lru_cache(maxsize=1)
def models_catalog() -> list[dict[str, Any]]:
    """One entry per model (``model.name``)."""
    out = []
    for model in _union_members(S.ModelSpec):
        name = S.registry_name(model)
        info = MODELS[name]
        out.append(
            {
                "name": "timm:<arch>" if name == "timm" else name,
                **({"extra": S.TIMM_EXTRA, "available": _timm_available()} if name == "timm" else {}),
                "description": info.description or inspect.getdoc(model) or "",
                "parameters": model_params(model),
            }
        )
    return out
