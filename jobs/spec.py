"""The job spec: one versioned pydantic model, the single source of truth for REST, client, CLI and spec files.

A ``JobSpec`` names a dataset, a model, one or more loss *branches* (each with its own parameters or search
domains), a re-weighting scheme, a training schedule, the scaling of each trial, the search (with its seeds per
config, ``tune.repeats``) and how results are chosen (``evaluation``: on a validation split by default). Every field
but ``dataset`` and ``losses`` has a default, visible in ``JobSpec.model_json_schema()``.

Search domains (usable for any numeric or categorical field marked searchable)::

    {"choice": [...]}   {"grid": [...]}   {"uniform": [lo, hi]}   {"loguniform": [lo, hi]}
    {"randint": [lo, hi]}  (hi exclusive)   {"quniform": [lo, hi, q]}

A valid spec is valid anywhere (stored, resumed, read back by a client). The limits a deployment imposes on a job
(trials, epochs, workers per trial) are one separate check, made by the service when a job is submitted::

    Limits(max_trials=64, max_epochs=200).check(spec)  # raises LimitExceeded naming the field
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jobs.domains import (  # noqa: F401 - the domains are part of the spec's public names
    DOMAIN_KEYS,
    Bounds,
    Checked,
    Choice,
    Domain,
    FloatOrDomain,
    Grid,
    IntOrDomain,
    LogUniform,
    OneOf,
    QUniform,
    RandInt,
    Scalar,
    SearchDomain,
    StrOrDomain,
    Uniform,
    is_domain,
)
from jobs.domains import Strict as _Strict

API_VERSION: Final = "v1"

METRICS = (
    "accuracy",
    "balanced_accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
    "macro_f1",
    "nll",
    "ece",
)
MINIMISED_METRICS = frozenset({"nll", "ece"})


SEED_LIMIT = 2**32  # numpy and torch take seeds in [0, 2^32)
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
MAX_REPEATS = 20  # seeds per config (tune.repeats)
MAX_EPOCHS = 1_000_000  # a bound for every epoch count (the service's max_epochs is usually far lower)


# --------------------------------------------------------------------------------------------------------------
# Dataset, model
# --------------------------------------------------------------------------------------------------------------
Profile = Literal["exp", "step"]


PathKind = Literal["file", "dir"]


class _Dataset(_Strict):
    # Fields that name filesystem paths, and what they name: the service resolves them inside its data root.
    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {}


class DigitsLT(_Dataset):
    """scikit-learn's bundled handwritten digits, long-tail subsampled (no download)."""

    name: Literal["digits_lt"] = "digits_lt"
    imbalance_factor: float = Field(50.0, ge=1)
    profile: Profile = "exp"
    test_per_class: int = Field(50, ge=1, le=150)
    seed: Seed = 0


class SyntheticLT(_Dataset):
    """A seeded Gaussian mixture with any number of classes."""

    name: Literal["synthetic_lt"] = "synthetic_lt"
    num_classes: int = Field(10, ge=2, le=1000)
    dim: int = Field(32, ge=1, le=4096)
    n_max: int = Field(500, ge=1, le=100_000)
    imbalance_factor: float = Field(100.0, ge=1)
    profile: Profile = "exp"
    test_per_class: int = Field(50, ge=1, le=10_000)
    class_sep: float = Field(2.0, gt=0)
    noise: float = Field(1.0, gt=0)
    seed: Seed = 0


def _relative_name(value: str | None) -> str | None:
    """A folder name under a dataset's root: relative, without '..' (the root itself is checked at submit)."""
    if value is None:
        return value
    parts = value.replace("\\", "/").split("/")
    if not value.strip() or value.startswith("/") or ".." in parts or "\x00" in value:
        raise ValueError(f"{value!r} must be a folder name relative to root, without '..'")
    return value


RelativeName = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_relative_name)]
RGB = Annotated[list[float], Field(min_length=3, max_length=3)]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class _ImageDataset(_Dataset):
    image_size: int = Field(224, ge=32, le=1024, description="Side of the square crop the model sees.")
    augment: bool = Field(True, description="Training: random resized crop + flip (on the device); else resize + crop.")
    imbalance_factor: float | None = Field(None, ge=1, description="Subsample the training split long-tailed.")
    profile: Profile = "exp"
    seed: Seed = 0
    mean: RGB = Field(default_factory=lambda: list(IMAGENET_MEAN), description="Normalisation mean (RGB).")
    std: RGB = Field(default_factory=lambda: list(IMAGENET_STD), description="Normalisation std (RGB).")

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError(f"std must be positive, got {v}")
        return v


class ImageFolderDataset(_ImageDataset):
    """Your images, one sub-folder per class (torchvision's ImageFolder layout), decoded lazily."""

    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {"root": "dir"}
    name: Literal["image_folder"] = "image_folder"
    root: str = Field(description="Folder holding the split folders, relative to the data root.")
    train: RelativeName = Field("train", description="Training split folder under root.")
    val: RelativeName | None = Field(None, description="Validation split folder under root (none: split test).")
    test: RelativeName = Field("test", description="Test split folder under root.")


class FileListDataset(_ImageDataset):
    """Your images listed in text files, one 'relative/path label' per line (ImageNet-LT, Places-LT, iNaturalist)."""

    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {
        "root": "dir",
        "train": "file",
        "val": "file",
        "test": "file",
        "class_names": "file",
    }
    name: Literal["file_list"] = "file_list"
    root: str = Field(description="Folder the listed image paths are relative to, relative to the data root.")
    train: str = Field(description="Training list file, relative to the data root.")
    val: str | None = Field(None, description="Validation list file (none: split test).")
    test: str = Field(description="Test list file, relative to the data root.")
    class_names: str | None = Field(None, description="A file with one class name per line (line i names class i).")


class TabularDataset(_Dataset):
    """Your table: numeric feature columns and a label column, in CSV or Parquet files."""

    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {"train": "file", "val": "file", "test": "file"}
    name: Literal["tabular"] = "tabular"
    train: str = Field(description="Training file (.csv or .parquet), relative to the data root.")
    val: str | None = Field(None, description="Validation file (none: split test).")
    test: str = Field(description="Test file (.csv or .parquet).")
    label: str = Field("label", min_length=1, max_length=256, description="The label column.")
    features: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, min_length=1, max_length=100_000, description="Feature columns (none: every column but the label)."
    )
    imbalance_factor: float | None = Field(None, ge=1, description="Subsample the training split long-tailed.")
    profile: Profile = "exp"
    seed: Seed = 0


class _CifarLT(_Dataset):
    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {"path": "dir"}
    path: str | None = Field(None, description="Folder with the CIFAR python pickles, relative to the data root.")
    imbalance_factor: float = Field(100.0, ge=1)
    profile: Profile = "exp"
    seed: Seed = 0
    augment: bool = True


class Cifar10LT(_CifarLT):
    """CIFAR-10-LT from local CIFAR python pickles."""

    name: Literal["cifar10_lt"] = "cifar10_lt"


class Cifar100LT(_CifarLT):
    """CIFAR-100-LT from local CIFAR python pickles."""

    name: Literal["cifar100_lt"] = "cifar100_lt"


class NpzDataset(_Dataset):
    """A user's .npz file with x_train, y_train, x_test, y_test."""

    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {"path": "file"}
    name: Literal["npz"] = "npz"
    path: str = Field(description="The .npz file, relative to the data root.")
    num_classes: int | None = Field(None, ge=2, le=100_000)
    imbalance_factor: float | None = Field(None, ge=1)
    profile: Profile = "exp"
    seed: Seed = 0
    class_names: list[str] | None = None


DatasetSpec = Annotated[
    DigitsLT
    | SyntheticLT
    | Cifar10LT
    | Cifar100LT
    | NpzDataset
    | ImageFolderDataset
    | FileListDataset
    | TabularDataset,
    Field(discriminator="name"),
]


class MLPModel(_Strict):
    """A multi-layer perceptron over the flattened input."""

    name: Literal["mlp"] = "mlp"
    hidden_sizes: list[int] = Field(default_factory=lambda: [128], max_length=8)
    dropout: Annotated[FloatOrDomain, Bounds(ge=0, lt=1)] = 0.0
    normalized: bool = False

    @field_validator("hidden_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(h < 1 or h > 65536 for h in v):
            raise ValueError("hidden sizes must be in [1, 65536]")
        return v


class ResNet32Model(_Strict):
    """The CIFAR ResNet-32 of He et al. (2016)."""

    name: Literal["resnet32"] = "resnet32"
    normalized: bool = False


class _ImageNetResNet(_Strict):
    PATH_FIELDS: ClassVar[dict[str, PathKind]] = {"weights_path": "file"}
    normalized: bool = False
    weights_path: str | None = Field(
        None,
        description="A .pth or .safetensors state dict in torchvision's names, relative to the data root; "
        "the classifier head is re-initialised.",
    )


class ResNet18Model(_ImageNetResNet):
    """ResNet-18 (ImageNet layout, torchvision's parameter names)."""

    name: Literal["resnet18"] = "resnet18"


class ResNet34Model(_ImageNetResNet):
    """ResNet-34 (ImageNet layout, torchvision's parameter names)."""

    name: Literal["resnet34"] = "resnet34"


class ResNet50Model(_ImageNetResNet):
    """ResNet-50 (ImageNet layout, torchvision's parameter names)."""

    name: Literal["resnet50"] = "resnet50"


class ResNeXt50Model(_ImageNetResNet):
    """ResNeXt-50 32x4d (ImageNet layout, torchvision's parameter names)."""

    name: Literal["resnext50_32x4d"] = "resnext50_32x4d"


TIMM_EXTRA = "timm"


class TimmModel(_ImageNetResNet):
    """Any timm architecture, named 'timm:<arch>' (the optional extra 'timm'), with this project's head."""

    REGISTRY_NAME: ClassVar[str] = "timm"
    name: str = Field(pattern=r"^timm:[A-Za-z0-9_.\-]{1,128}$", description="timm:<architecture>")
    weights_path: str | None = Field(None, description="A .pth or .safetensors state dict in timm's names.")

    @field_validator("name")
    @classmethod
    def _timm_importable(cls, v: str) -> str:
        import importlib.util

        if importlib.util.find_spec("timm") is None:
            raise ValueError(
                f"{v} needs the optional extra {TIMM_EXTRA!r} (pip install 'longtail-service[{TIMM_EXTRA}]'), "
                "and timm is not importable on this service"
            )
        return v


def _model_tag(value: Any) -> str | None:
    name = value.get("name", "mlp") if isinstance(value, dict) else getattr(value, "name", None)
    if isinstance(name, str) and name.startswith("timm:"):
        return "timm"
    return name


ModelSpec = Annotated[
    Annotated[MLPModel, Tag("mlp")]
    | Annotated[ResNet32Model, Tag("resnet32")]
    | Annotated[ResNet18Model, Tag("resnet18")]
    | Annotated[ResNet34Model, Tag("resnet34")]
    | Annotated[ResNet50Model, Tag("resnet50")]
    | Annotated[ResNeXt50Model, Tag("resnext50_32x4d")]
    | Annotated[TimmModel, Tag("timm")],
    Discriminator(
        _model_tag,
        custom_error_type="invalid_model",
        custom_error_message="unknown model name; expected mlp, resnet32, resnet18, resnet34, resnet50, "
        "resnext50_32x4d or timm:<arch>",
    ),
]


def registry_name(model: type[BaseModel]) -> str:
    """The ``lt_core`` registry key of a dataset or model spec class (``timm`` for ``timm:<arch>``)."""
    return getattr(model, "REGISTRY_NAME", None) or model.model_fields["name"].default


# --------------------------------------------------------------------------------------------------------------
# Re-weighting and loss branches
# --------------------------------------------------------------------------------------------------------------
class Reweighting(_Strict):
    """Class re-weighting: none, inverse frequency, or effective number; with ``start_epoch`` it is deferred (DRW)."""

    scheme: Literal["none", "inverse", "effective_number"] = "none"
    beta: float = Field(0.9999, ge=0, lt=1, description="effective_number only")
    start_epoch: int | None = Field(
        None,
        ge=0,
        le=MAX_EPOCHS,
        description="Deferred re-weighting: weights apply from this epoch (0-based); None = from the start.",
    )

    @property
    def deferred_start(self) -> int:
        """The epoch from which the weights apply (0 when not deferred or not weighted)."""
        return 0 if self.scheme == "none" or self.start_epoch is None else self.start_epoch


class _Branch(_Strict):
    label: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.+-]+$",
        description="A name for this branch in results (default: the loss name); unique within a job.",
    )
    reweighting: Reweighting | None = Field(None, description="Overrides the job's re-weighting for this branch.")

    # Branch-level fields that are not loss parameters.
    TRAINING_FIELDS: ClassVar[frozenset[str]] = frozenset({"name", "label", "reweighting", "start_epoch", "normalized"})

    def loss_params(self) -> dict[str, Any]:
        """The loss's own parameters (values or domains), keyed as ``lt_core.losses`` names them."""
        return {k: getattr(self, k) for k in type(self).model_fields if k not in self.TRAINING_FIELDS}

    @property
    def key(self) -> str:
        return self.label or self.name  # type: ignore[attr-defined]


class CESpec(_Branch):
    """Cross-entropy."""

    name: Literal["ce"] = "ce"


class FocalSpec(_Branch):
    """Focal loss (Lin et al., 2017)."""

    name: Literal["focal"] = "focal"
    gamma: Annotated[FloatOrDomain, Bounds(ge=0)] = 1.0


class LabelSmoothingSpec(_Branch):
    """Cross-entropy with label smoothing (Szegedy et al., 2016)."""

    name: Literal["label_smoothing"] = "label_smoothing"
    epsilon: Annotated[FloatOrDomain, Bounds(ge=0, lt=1)] = 0.1


class SEQLSpec(_Branch):
    """Softmax equalization loss (Tan et al., 2020)."""

    name: Literal["seql"] = "seql"
    lambda_: Annotated[FloatOrDomain, Bounds(ge=0, le=1)] = 0.05
    gamma: Annotated[FloatOrDomain, Bounds(ge=0, le=1)] = 0.9


class _IBBase(_Branch):
    alpha: Annotated[FloatOrDomain, Bounds(gt=0)] = 1000.0
    epsilon: Annotated[FloatOrDomain, Bounds(gt=0)] = 1e-3
    start_epoch: Annotated[IntOrDomain, Bounds(ge=0, le=MAX_EPOCHS, integer=True)] = Field(
        0, description="Plain cross-entropy until this epoch (0-based), then the IB loss (IB's warm-up)."
    )


class IBSpec(_IBBase):
    """Influence-balanced loss (Park et al., 2021)."""

    name: Literal["ib"] = "ib"


class IBFocalSpec(_IBBase):
    """Influence-balanced focal loss (Park et al., 2021)."""

    name: Literal["ib_focal"] = "ib_focal"
    gamma: Annotated[FloatOrDomain, Bounds(ge=0)] = 1.0


class CDTSpec(_Branch):
    """Class-dependent temperatures (Ye et al., 2020)."""

    name: Literal["cdt"] = "cdt"
    gamma: Annotated[FloatOrDomain, Bounds(ge=0)] = 0.2


class LDAMSpec(_Branch):
    """Label-distribution-aware margin loss (Cao et al., 2019); pair it with DRW for LDAM-DRW."""

    name: Literal["ldam"] = "ldam"
    max_margin: Annotated[FloatOrDomain, Bounds(ge=0)] = 0.5
    scale: Annotated[FloatOrDomain, Bounds(gt=0)] = 30.0
    normalized: bool = Field(True, description="Use a cosine (normalised) classifier for this branch.")


class BalancedSoftmaxSpec(_Branch):
    """Balanced softmax (Ren et al., 2020)."""

    name: Literal["balanced_softmax"] = "balanced_softmax"


class LogitAdjustedSpec(_Branch):
    """Logit-adjusted loss (Menon et al., 2021)."""

    name: Literal["logit_adjusted"] = "logit_adjusted"
    tau: Annotated[FloatOrDomain, Bounds(gt=0)] = 1.0


LossBranch = Annotated[
    CESpec
    | FocalSpec
    | LabelSmoothingSpec
    | SEQLSpec
    | IBSpec
    | IBFocalSpec
    | CDTSpec
    | LDAMSpec
    | BalancedSoftmaxSpec
    | LogitAdjustedSpec,
    Field(discriminator="name"),
]
BRANCH_MODELS: dict[str, type[_Branch]] = {
    m.model_fields["name"].default: m
    for m in (
        CESpec,
        FocalSpec,
        LabelSmoothingSpec,
        SEQLSpec,
        IBSpec,
        IBFocalSpec,
        CDTSpec,
        LDAMSpec,
        BalancedSoftmaxSpec,
        LogitAdjustedSpec,
    )
}


# --------------------------------------------------------------------------------------------------------------
# Training, scaling, search
# --------------------------------------------------------------------------------------------------------------
class TrainSpec(_Strict):
    """The training schedule (per trial)."""

    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)
    batch_size: Annotated[IntOrDomain, Bounds(ge=1, le=65536, integer=True)] = 128
    optimizer: Annotated[StrOrDomain, OneOf("sgd", "adamw")] = "sgd"
    lr: Annotated[FloatOrDomain, Bounds(gt=0, le=10)] = 0.1
    momentum: Annotated[FloatOrDomain, Bounds(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[FloatOrDomain, Bounds(ge=0, le=1)] = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[Annotated[int, Field(ge=-MAX_EPOCHS, le=MAX_EPOCHS)]] = Field(
        default_factory=list, max_length=100, description="Epochs at which 'step' multiplies lr by lr_decay."
    )
    lr_decay: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description="Linear learning-rate warm-up epochs.")
    seed: Seed = 0
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast dtype of the forward pass (fp16 adds a GradScaler); losses stay float32."
    )
    loader_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="DataLoader worker processes per DDP worker; default min(4, cpus_per_worker) for image files.",
    )

    @model_validator(mode="after")
    def _schedule(self) -> TrainSpec:
        if any(m < 1 or m >= self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie in [1, epochs={self.epochs}), got {self.milestones}")
        if sorted(set(self.milestones)) != list(self.milestones):
            raise ValueError("milestones must be strictly increasing")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        return self


class ScalingSpec(_Strict):
    """How each trial runs: DDP processes (Ray Train workers) and their resources."""

    num_workers: int = Field(1, ge=1, le=256)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, le=256)
    gpus_per_worker: float | None = Field(None, ge=0, le=16, description="Default: 1 with use_gpu, else 0.")
    max_failures: int = Field(1, ge=0, le=10, description="Worker failures retried from the last checkpoint.")

    @property
    def gpus(self) -> float:
        if self.gpus_per_worker is not None:
            return self.gpus_per_worker
        return 1.0 if self.use_gpu else 0.0

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus_per_worker(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None or not info.data.get("use_gpu"):
            return v  # GPUs without use_gpu: refused below
        if v == 0:
            # Ray would add GPU: 1 to each worker itself, which the cluster check (0 GPUs) never plans for
            raise ValueError("use_gpu: true needs gpus_per_worker > 0; omit it for 1 GPU per worker")
        workers = info.data.get("num_workers", 1)
        if workers > 1 and v != 1:
            raise ValueError(
                f"a DDP trial on GPUs (num_workers {workers}) needs gpus_per_worker 1, got {v:g}: a fraction can put "
                "two ranks on one GPU, which NCCL refuses, and a worker uses one GPU only (fractions are allowed "
                "with num_workers 1, to share a GPU between trials)"
            )
        return v

    @model_validator(mode="after")
    def _gpu(self) -> ScalingSpec:
        if self.gpus_per_worker and not self.use_gpu:
            raise ValueError("gpus_per_worker > 0 needs use_gpu: true")
        return self


class TuneSpec(_Strict):
    """The search over loss branches and their hyperparameters."""

    num_samples: int = Field(1, ge=1, le=1000, description="Samples per loss branch (grid axes multiply it).")
    metric: Literal[METRICS] = "balanced_accuracy"  # type: ignore[valid-type]
    mode: Literal["max", "min"] | None = Field(None, description="Default: min for nll/ece, else max.")
    search: Literal["random", "grid", "tpe"] = "random"
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_period: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="ASHA: epochs before a trial can be stopped (never before re-balancing starts).",
    )
    reduction_factor: int = Field(3, ge=2, le=10)
    max_concurrent_trials: int | None = Field(
        None, ge=1, le=1000, description="Default: as many trials as the cluster's CPUs and GPUs hold at once."
    )
    seed: Seed | None = 0
    control: bool = Field(True, description="Add one plain cross-entropy trial with the same model and schedule.")
    repeats: int = Field(
        1,
        ge=1,
        le=MAX_REPEATS,
        description="Train every planned config, and the control, this many times with train seeds train.seed + r "
        "(r = 0 .. repeats-1) on the same data split; a branch's gain is then the mean of its paired differences "
        "against the control run with the same seed, with a 95% confidence interval.",
    )

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        return self.mode or ("min" if self.metric in MINIMISED_METRICS else "max")


class EvaluationSpec(_Strict):
    """How a job chooses (an epoch per trial, a config per branch, the best trial) and what it reports."""

    selection: Literal["val", "test"] = Field(
        "val",
        description="'val': every choice (a trial's epoch, a branch's config, the best trial, ASHA, TPE) uses the "
        "validation split, and the test split is only reported. 'test': choose and report on the full test split "
        "(the published CIFAR-LT protocol; results say selected_on: test).",
    )
    val_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="For a dataset without its own validation split: the share of each class's test items that moves "
        "to validation (stratified, seeded by the dataset's seed; at least one item per class on each side).",
    )
    epoch: Literal["best", "last"] = Field(
        "best", description="A trial's reported epoch: 'best' by the selection metric, or the 'last' epoch."
    )


# --------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------
class JobSpec(_Strict):
    """A long-tail training job: a search over loss branches on one dataset and model."""

    api_version: Literal["v1"] = API_VERSION
    name: str = Field("job", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:+ -]+$")
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=MLPModel)
    losses: list[LossBranch] = Field(min_length=1, max_length=64)
    reweighting: Reweighting = Field(default_factory=Reweighting)
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    @property
    def selection_metric(self) -> str:
        """The metric every choice is made on: ``val_<tune.metric>`` with selection "val", else ``tune.metric``."""
        prefix = "val_" if self.evaluation.selection == "val" else ""
        return prefix + self.tune.metric

    @model_validator(mode="after")
    def _consistency(self) -> JobSpec:
        keys = [b.key for b in self.losses]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"losses: branches must be distinct; give a 'label' to repeated branches {dupes}")
        if self.tune.control and "control" in keys:
            raise ValueError("the branch label 'control' is reserved for the cross-entropy control trial")
        grids = [(p, d) for p, d in self.iter_domains() if d.GRID_AXIS]
        if self.tune.search == "tpe" and grids:
            raise ValueError(f"tune.search: grid domains cannot be combined with 'tpe' (at {[p for p, _ in grids]})")
        if self.tune.search == "grid":
            continuous = [p for p, d in self.iter_domains() if not d.CATEGORICAL]
            if continuous:
                raise ValueError(f"tune.search: 'grid' takes only grid/choice domains; continuous at {continuous}")
        epochs = self.train.epochs
        for i, b in enumerate(self.losses):
            rw = b.reweighting or self.reweighting
            if rw.start_epoch is not None and rw.start_epoch >= epochs:
                raise ValueError(f"losses[{i}].reweighting.start_epoch: {rw.start_epoch} >= train.epochs {epochs}")
            start = getattr(b, "start_epoch", 0)
            for v in start.extremes() if isinstance(start, SearchDomain) else [start]:
                if v >= epochs:
                    raise ValueError(f"losses[{i}].start_epoch: {v} >= train.epochs {epochs}")
        if self.reweighting.start_epoch is not None and self.reweighting.start_epoch >= epochs:
            raise ValueError(f"reweighting.start_epoch: {self.reweighting.start_epoch} >= train.epochs {epochs}")
        self._check_val_split()
        return self

    def _check_val_split(self) -> None:
        """A validation split that leaves a class without validation or test items is refused here when the test
        split's size is in the spec (digits_lt, synthetic_lt); for files it is refused when the data is loaded."""
        if self.evaluation.selection != "val":
            return
        per_class = getattr(self.dataset, "test_per_class", None)
        if per_class is None:
            return
        fraction = self.evaluation.val_fraction
        n_val = int(round(fraction * per_class))
        if not 1 <= n_val <= per_class - 1:
            raise ValueError(
                f"evaluation.val_fraction: {fraction:g} of dataset.test_per_class={per_class} leaves "
                f"{n_val} validation and {per_class - n_val} test item(s) per class; each side needs at least one "
                "(raise test_per_class, change val_fraction, or use selection 'test')"
            )

    # -- helpers used by the search, the service and the CLI ------------------------------------------------------
    def iter_domains(self, kinds: tuple[type, ...] | None = None) -> Iterator[tuple[str, Domain]]:
        """Yield (field path, domain) for every search domain in the spec."""
        sections: list[tuple[str, BaseModel]] = [("model", self.model), ("train", self.train)]
        sections += [(f"losses[{i}]", b) for i, b in enumerate(self.losses)]
        for prefix, section in sections:
            for field in type(section).model_fields:
                value = getattr(section, field)
                if is_domain(value) and (kinds is None or isinstance(value, kinds)):
                    yield f"{prefix}.{field}", value

    def _grid_size(self, section_paths: tuple[str, ...]) -> int:
        size = 1
        for path, d in self.iter_domains():
            axis = d.axis(self.tune.search == "grid") if path.startswith(section_paths) else None
            size *= len(axis) if axis is not None else 1
        return size

    def configs_per_branch(self, index: int) -> int:
        """Configs the search plans for branch ``index`` (grid axes times num_samples)."""
        return self._grid_size(("model.", "train.", f"losses[{index}].")) * self.tune.num_samples

    def trials_per_branch(self, index: int) -> int:
        """Trials the search runs for branch ``index`` (its configs times repeats)."""
        return self.configs_per_branch(index) * self.tune.repeats

    def trial_count(self) -> int:
        """Total trials including the control's repeats."""
        control = int(self.tune.control) * self.tune.repeats
        return sum(self.trials_per_branch(i) for i in range(len(self.losses))) + control

    def dataset_paths(self) -> dict[str, str]:
        """Dataset parameters that are filesystem paths (for the data-root check), by field name."""
        return {loc.split(".", 1)[1]: raw for loc, raw, _ in self.spec_paths() if loc.startswith("dataset.")}

    def spec_paths(self) -> list[tuple[str, str, PathKind]]:
        """Every filesystem path the spec names, as ``(field path, value, "file" | "dir")`` (data-root check)."""
        out: list[tuple[str, str, PathKind]] = []
        for section, model in (("dataset", self.dataset), ("model", self.model)):
            for field, kind in getattr(type(model), "PATH_FIELDS", {}).items():
                value = getattr(model, field, None)
                if value is not None:
                    out.append((f"{section}.{field}", value, kind))
        return out

    def with_dataset_params(self, **params: Any) -> JobSpec:
        """A copy with dataset parameters replaced (e.g. resolved absolute paths)."""
        return self.with_paths({f"dataset.{k}": v for k, v in params.items()})

    def with_paths(self, values: dict[str, str]) -> JobSpec:
        """A copy with ``section.field`` values replaced (e.g. resolved absolute paths from ``spec_paths``)."""
        data = self.model_dump(mode="json")
        for loc, value in values.items():
            section, field = loc.split(".", 1)
            data[section][field] = value
        return JobSpec.model_validate(data)

    def trial_resources(self) -> dict[str, float]:
        """Resources of one trial: a single worker trains in the trial's process; DDP workers add a small driver."""
        s = self.scaling
        if s.num_workers == 1:
            return {"CPU": s.cpus_per_worker, "GPU": s.gpus}
        return {"CPU": s.num_workers * s.cpus_per_worker + TRIAL_DRIVER_CPU, "GPU": s.num_workers * s.gpus}

    def worker_resources(self) -> dict[str, float]:
        """Resources of one DDP worker (all must fit on one node)."""
        return {"CPU": self.scaling.cpus_per_worker, "GPU": self.scaling.gpus}

    def rebalancing_start(self) -> int:
        """The last epoch at which any branch's re-balancing (DRW or IB's loss) starts; ASHA's grace builds on it."""
        starts = [self.reweighting.deferred_start]
        for b in self.losses:
            if b.reweighting is not None:
                starts.append(b.reweighting.deferred_start)
            s = getattr(b, "start_epoch", 0)
            starts.append(max(s.extremes()) if isinstance(s, SearchDomain) else s)
        return int(max(starts))


TRIAL_DRIVER_CPU = 0.01


# --------------------------------------------------------------------------------------------------------------
# Deployment limits
# --------------------------------------------------------------------------------------------------------------
class LimitExceeded(ValueError):
    """A spec beyond a deployment's limit; ``loc`` names the field (``tune.num_samples``, ``train.epochs``, ...)."""

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")
        self.loc, self.msg = loc, msg


class Limits(_Strict):
    """What a deployment allows one job. ``None``: no limit. The service checks every submitted spec against its
    ``Limits`` (and nothing else does: a spec already accepted is never checked again)."""

    max_trials: int | None = Field(None, ge=1, description="Trials per job, the control and every repeat included.")
    max_epochs: int | None = Field(None, ge=1, description="train.epochs")
    max_workers_per_trial: int | None = Field(None, ge=1, description="scaling.num_workers")

    def violations(self, spec: JobSpec) -> list[LimitExceeded]:
        """Every limit ``spec`` exceeds, each naming its field."""
        out = []
        if self.max_epochs is not None and spec.train.epochs > self.max_epochs:
            out.append(LimitExceeded("train.epochs", f"{spec.train.epochs} exceeds the limit of {self.max_epochs}"))
        trials = spec.trial_count()
        if self.max_trials is not None and trials > self.max_trials:
            field = "tune.repeats" if spec.tune.repeats > 1 else "tune.num_samples"
            out.append(
                LimitExceeded(field, f"the job would run {trials} trials, more than the limit of {self.max_trials}")
            )
        workers = spec.scaling.num_workers
        if self.max_workers_per_trial is not None and workers > self.max_workers_per_trial:
            out.append(
                LimitExceeded(
                    "scaling.num_workers",
                    f"{workers} workers per trial exceeds the limit of {self.max_workers_per_trial}",
                )
            )
        return out

    def check(self, spec: JobSpec) -> JobSpec:
        """``spec`` when it is within the limits.

        Raises:
            LimitExceeded: for the first limit it exceeds.
        """
        for problem in self.violations(spec):
            raise problem
        return spec
