"""Search domains: the values a searchable spec field may take instead of one value, and what each domain does.

A domain knows how to sample itself (``sample(rng)``, the semantics of Ray Tune's), its centre (``center()``, the
control trial's value of a shared train parameter), its Optuna suggestion (``suggest(trial, name)``), its listed
values (``values()``, for grid and choice) and the extreme values a field's bounds are checked on (``extremes()``).
``FloatOrDomain``/``IntOrDomain``/``StrOrDomain`` are the field types; ``Bounds``/``OneOf`` their checks, which also
publish the plain value's bounds or choices in the JSON schema (read by ``jobs.catalog`` and clients). Pydantic only:
the light client install imports this.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Tag,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

if TYPE_CHECKING:
    import numpy as np  # the light client install has no NumPy: domains take a Generator, never import one


class Strict(BaseModel):
    """The base of every spec model: unknown keys refused, frozen, and no NaN or infinity (a stored spec must stay
    valid JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------------------
# Search domains
# --------------------------------------------------------------------------------------------------------------
Scalar = bool | int | float | str


class SearchDomain(Strict):
    """A search domain. It knows how to sample itself, its centre and its Optuna suggestion (no ``isinstance``
    ladders elsewhere); ``extremes()`` are the values a field's bounds are checked on."""

    KEY: ClassVar[str]
    CONTINUOUS: ClassVar[bool] = False  # float-valued: no integer field takes it
    CATEGORICAL: ClassVar[bool] = False  # a finite list of values: the only kind a categorical field takes
    GRID_AXIS: ClassVar[bool] = False  # expanded into one config per value, whatever the search

    def sample(self, rng: np.random.Generator) -> Any:
        """One value drawn with ``rng`` (the same semantics as Ray Tune's domains)."""
        raise NotImplementedError

    def center(self) -> Any:
        """A deterministic representative (the control trial's value of a shared train domain)."""
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna trial suggests for this domain under ``name``."""
        raise NotImplementedError

    def extremes(self) -> list[Any]:
        """The listed values, or the lowest and highest value the domain takes (field bounds are checked on them)."""
        raise NotImplementedError

    def values(self) -> list[Any]:
        """Every value of a finite domain (choice, grid)."""
        raise TypeError(f"{self.KEY} is not a finite domain: it has no list of values")

    def axis(self, grid_search: bool) -> list[Any] | None:
        """The values this domain expands into when it is a grid axis (grid; choice with ``grid_search``), else None."""
        return self.values() if self.GRID_AXIS or (grid_search and self.CATEGORICAL) else None


class _Listed(SearchDomain):
    CATEGORICAL: ClassVar[bool] = True

    def values(self) -> list[Any]:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> Any:
        values = self.values()
        return values[int(rng.integers(len(values)))]

    def center(self) -> Any:
        return self.values()[0]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, self.values())

    def extremes(self) -> list[Any]:
        return self.values()


class Choice(_Listed):
    """Sample one of the values uniformly."""

    KEY: ClassVar[str] = "choice"
    choice: list[Scalar] = Field(min_length=1)

    def values(self) -> list[Any]:
        return list(self.choice)


class Grid(_Listed):
    """Try every value (a grid axis); multiplies the number of trials."""

    KEY: ClassVar[str] = "grid"
    GRID_AXIS: ClassVar[bool] = True
    grid: list[Scalar] = Field(min_length=1)

    def values(self) -> list[Any]:
        return list(self.grid)


def _check_bounds(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("bounds must be finite")
    if lo >= hi:
        raise ValueError(f"lower bound must be < upper bound, got [{lo}, {hi}]")


class Uniform(SearchDomain):
    """Uniform float in [lo, hi]."""

    KEY: ClassVar[str] = "uniform"
    CONTINUOUS: ClassVar[bool] = True
    uniform: tuple[float, float]

    @field_validator("uniform")
    @classmethod
    def _bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        _check_bounds(*v)
        return v

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(*self.uniform))

    def center(self) -> float:
        return float(sum(self.uniform) / 2)

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.uniform)

    def extremes(self) -> list[Any]:
        return list(self.uniform)


class LogUniform(SearchDomain):
    """Log-uniform float in [lo, hi], lo > 0."""

    KEY: ClassVar[str] = "loguniform"
    CONTINUOUS: ClassVar[bool] = True
    loguniform: tuple[float, float]

    @field_validator("loguniform")
    @classmethod
    def _bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"loguniform needs lo > 0, got {v[0]}")
        _check_bounds(*v)
        return v

    def sample(self, rng: np.random.Generator) -> float:
        lo, hi = self.loguniform
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    def center(self) -> float:
        return float(math.sqrt(self.loguniform[0] * self.loguniform[1]))

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.loguniform, log=True)

    def extremes(self) -> list[Any]:
        return list(self.loguniform)


class RandInt(SearchDomain):
    """Uniform integer in [lo, hi) (hi exclusive, as in Ray Tune)."""

    KEY: ClassVar[str] = "randint"
    randint: tuple[int, int]

    @field_validator("randint")
    @classmethod
    def _bounds(cls, v: tuple[int, int]) -> tuple[int, int]:
        _check_bounds(*v)
        return v

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(*self.randint))

    def center(self) -> int:
        return int((self.randint[0] + self.randint[1] - 1) // 2)

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.randint[0], self.randint[1] - 1)

    def extremes(self) -> list[Any]:
        return [self.randint[0], self.randint[1] - 1]


class QUniform(SearchDomain):
    """Uniform in [lo, hi], rounded to a multiple of q."""

    KEY: ClassVar[str] = "quniform"
    quniform: tuple[float, float, float]

    @field_validator("quniform")
    @classmethod
    def _bounds(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        _check_bounds(v[0], v[1])
        if v[2] <= 0:
            raise ValueError(f"quniform needs q > 0, got {v[2]}")
        return v

    @property
    def _integral(self) -> bool:
        lo, _, q = self.quniform
        return float(q).is_integer() and float(lo).is_integer()

    def _rounded(self, value: float) -> int | float:
        q = self.quniform[2]
        value = round(value / q) * q
        return int(value) if self._integral else float(value)

    def sample(self, rng: np.random.Generator) -> int | float:
        lo, hi, _ = self.quniform
        return self._rounded(rng.uniform(lo, hi))

    def center(self) -> int | float:
        lo, hi, _ = self.quniform
        return self._rounded((lo + hi) / 2)

    def suggest(self, trial: Any, name: str) -> int | float:
        lo, hi, q = self.quniform
        if self._integral:
            return trial.suggest_int(name, int(lo), int(hi), step=int(q))
        return trial.suggest_float(name, lo, hi, step=q)

    def extremes(self) -> list[Any]:
        return [self.quniform[0], self.quniform[1]]


_DOMAIN_MODELS: dict[str, type[SearchDomain]] = {
    m.KEY: m for m in (Choice, Grid, Uniform, LogUniform, RandInt, QUniform)
}
DOMAIN_KEYS = tuple(_DOMAIN_MODELS)
_DOMAIN_HELP = "expected a value or one search domain: " + ", ".join(f"{{{k!r}: ...}}" for k in DOMAIN_KEYS)


def _domain_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in DOMAIN_KEYS:
            return next(iter(value))
        return None
    return value.KEY if isinstance(value, SearchDomain) else "value"


_DOMAIN_DISCRIMINATOR = Discriminator(
    _domain_tag, custom_error_type="invalid_domain", custom_error_message=_DOMAIN_HELP
)
_TaggedDomain: TypeAlias = (
    Annotated[Choice, Tag("choice")]
    | Annotated[Grid, Tag("grid")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("loguniform")]
    | Annotated[RandInt, Tag("randint")]
    | Annotated[QUniform, Tag("quniform")]
)
# A value or a search domain, told apart by shape so errors name just the one that was meant. A field's bounds apply
# to every value it can take: ``Annotated[FloatOrDomain, Bounds(ge=0)]``.
FloatOrDomain: TypeAlias = Annotated[Annotated[float, Tag("value")] | _TaggedDomain, _DOMAIN_DISCRIMINATOR]
IntOrDomain: TypeAlias = Annotated[Annotated[int, Tag("value")] | _TaggedDomain, _DOMAIN_DISCRIMINATOR]
StrOrDomain: TypeAlias = Annotated[Annotated[str, Tag("value")] | _TaggedDomain, _DOMAIN_DISCRIMINATOR]


Domain = Choice | Grid | Uniform | LogUniform | RandInt | QUniform


def is_domain(value: Any) -> bool:
    """True for a search domain (a parsed model or its JSON form)."""
    if isinstance(value, SearchDomain):
        return True
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAIN_KEYS


class Checked:
    """A searchable field's check (on its value, or on every value its domain can take) and the JSON-schema keywords
    of its plain value (bounds or choices), which clients and the catalogs (``jobs.catalog``) read.

    The keywords go on the value alternative only: a domain (``{"uniform": [lo, hi]}``) is not a number itself.
    """

    def __init__(self, check: Callable[[Any], Any], **keywords: Any) -> None:
        self.check, self.keywords = check, keywords

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        target = handler.resolve_ref_schema(out)
        for option in target.get("oneOf", []) + target.get("anyOf", []):
            if "$ref" not in option:
                option.update(self.keywords)
        return out


_SCHEMA_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def Bounds(  # noqa: N802 - reads like pydantic's metadata classes
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    integer: bool = False,
) -> Checked:
    """The bounds of a searchable number field, checked on its value or on every value its domain can take;
    ``integer``: also refuse continuous domains and fractional values."""

    def check(value: Any) -> Any:
        values = value.extremes() if isinstance(value, SearchDomain) else [value]
        if integer and isinstance(value, SearchDomain) and value.CONTINUOUS:
            raise ValueError("an integer field takes choice, grid, randint or quniform domains")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"expected a number, got {v!r}")
            if integer and isinstance(v, float) and not v.is_integer():
                raise ValueError(f"expected an integer, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"expected a finite number, got {v!r}")
            if ge is not None and v < ge:
                raise ValueError(f"must be >= {ge}, got {v}")
            if gt is not None and v <= gt:
                raise ValueError(f"must be > {gt}, got {v}")
            if le is not None and v > le:
                raise ValueError(f"must be <= {le}, got {v}")
            if lt is not None and v >= lt:
                raise ValueError(f"must be < {lt}, got {v}")
        return value

    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    return Checked(check, **{_SCHEMA_BOUNDS[k]: v for k, v in bounds.items() if v is not None})


def OneOf(*allowed: str) -> Checked:  # noqa: N802
    """The values a searchable categorical field takes, checked on its value or on every value of its domain."""

    def check(value: Any) -> Any:
        values = value.extremes() if isinstance(value, SearchDomain) else [value]
        if isinstance(value, SearchDomain) and not value.CATEGORICAL:
            raise ValueError("a categorical field takes choice or grid domains only")
        for v in values:
            if v not in allowed:
                raise ValueError(f"expected one of {list(allowed)}, got {v!r}")
        return value

    return Checked(check, enum=list(allowed))
