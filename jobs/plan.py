"""The planner: a ``JobSpec`` in, the concrete trials out, as frozen ``TrialConfig``s. Pure: no Ray, no torch.

- ``random`` / ``grid`` search (``plan_trials``): the control, then for each branch the cartesian product of its grid
  axes times ``num_samples`` random draws of its other domains (seeded by ``tune.seed``: the same spec plans the same
  trials in the same order). Each branch only samples its own parameters.
- ``tpe`` (``TPESpace``): an Optuna define-by-run space, the control first, then ``branch`` and that branch's own
  parameters; each suggestion becomes a ``TrialConfig`` here too.
- ``tune.repeats``: every planned config (the control too) runs once per train seed ``train.seed + r``, its trials
  sharing a ``config_id`` (``TrialConfig.with_repeat``).

A trial's parameters are named by one path scheme wherever they are shown (``TrialConfig.config``, the results, the
CLI, the page): ``loss.<param>`` (the loss's own), ``branch.<param>`` (the branch's: IB's ``start_epoch``, its
re-weighting), ``train.<param>`` (``train.seed`` included) and ``model.<param>``.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from jobs.spec import JobSpec, Reweighting, Scalar, is_domain

TRAIN_SEARCHABLE = ("batch_size", "optimizer", "lr", "momentum", "weight_decay")
TRIAL_INDEX = "__trial_index__"  # ray.tune.search.repeater.TRIAL_INDEX (a Repeater's repeat index in the config)
CONFIG_ID = "config_id"  # the one key of a trial's config that is not a parameter path


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainSchedule(_Frozen):
    """A trial's training schedule: ``JobSpec.train`` with concrete values (and the trial's own seed)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    warmup_epochs: int = Field(0, ge=0)
    seed: int = Field(0, ge=0, description="train.seed + the repeat index")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    loader_workers: int | None = Field(None, ge=0)


class EvaluationOptions(_Frozen):
    """What a trial needs of ``JobSpec.evaluation``: whether to split off validation, and what it selects on.

    Without a ``metric`` (a trial run by hand) the trial has no selection score and checkpoints every epoch.
    """

    split: bool = False
    val_fraction: float = Field(0.5, gt=0, lt=1)
    seed: int = Field(0, ge=0, description="The dataset's seed: every trial of a job gets the same split.")
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    epoch: Literal["best", "last"] = "best"


class TrialConfig(_Frozen):
    """One planned trial, complete: what a worker trains and what the results show of it (``config``).

    The defaults describe a plain cross-entropy MLP trial, so a trial can be written by hand with what differs.
    """

    branch: str = Field("ce", description="The branch's key (its label or loss name); 'control' for the control.")
    branch_index: int = Field(0, ge=-1, description="Index in spec.losses; -1 for the control.")
    is_control: bool = False
    loss: str = "ce"
    loss_params: dict[str, Scalar] = Field(default_factory=dict)
    loss_start_epoch: int = Field(0, ge=0, description="Plain cross-entropy before this epoch (IB's warm-up).")
    normalized: bool | None = Field(None, description="The branch's cosine-classifier choice (LDAM), else the model's.")
    reweighting: Reweighting = Field(default_factory=Reweighting)
    model: str = "mlp"
    model_params: dict[str, Any] = Field(default_factory=dict)
    train: TrainSchedule = Field(default_factory=TrainSchedule)
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)
    sample_index: int = Field(0, ge=0)
    repeat: int = Field(0, ge=0)
    config_id: str = Field("", description="Shared by the repeats (seeds) of one planned config.")
    shown: tuple[str, ...] = Field(
        (),
        description="Parameter paths besides loss.* that config shows: the train/model parameters the spec "
        "searched, and branch.start_epoch for a loss with a warm-up.",
    )

    @property
    def config(self) -> dict[str, Any]:
        """The trial's config as the results show it: parameter paths (``loss.<p>``, ``branch.<p>``, ``train.<p>``,
        ``model.<p>``) to values, ``train.seed`` and ``branch.reweighting`` always, and the ``config_id``."""
        out: dict[str, Any] = {f"loss.{k}": v for k, v in self.loss_params.items()}
        for path in self.shown:
            out[path] = self.param(path)
        rw = self.reweighting
        out["branch.reweighting"] = rw.scheme + ("-drw" if rw.start_epoch else "")
        out["train.seed"] = self.train.seed
        out[CONFIG_ID] = self.config_id
        return out

    def param(self, path: str) -> Any:
        """The value of one parameter path (``train.lr``, ``model.dropout``, ``branch.start_epoch``, ``loss.gamma``)."""
        section, _, name = path.partition(".")
        if section == "loss" and name in self.loss_params:
            return self.loss_params[name]
        if section == "branch" and name == "start_epoch":
            return self.loss_start_epoch
        if section == "train" and name in TrainSchedule.model_fields:
            return getattr(self.train, name)
        if section == "model" and name in self.model_params:
            return self.model_params[name]
        raise KeyError(f"{path!r} is not a parameter of this trial")

    def with_repeat(self, repeat: int, base_seed: int) -> TrialConfig:
        """This trial for repeat ``repeat`` (train seed ``base_seed + repeat``); the config_id is kept."""
        train = self.train.model_copy(update={"seed": base_seed + repeat})
        return self.model_copy(update={"repeat": repeat, "train": train})


def evaluation_options(spec: JobSpec) -> EvaluationOptions:
    """What a trial needs to know of ``spec.evaluation``."""
    return EvaluationOptions(
        split=spec.evaluation.selection == "val",
        val_fraction=spec.evaluation.val_fraction,
        seed=int(getattr(spec.dataset, "seed", 0)),
        metric=spec.selection_metric,
        mode=spec.tune.resolved_mode,
        epoch=spec.evaluation.epoch,
    )


Sections = dict[str, dict[str, Any]]


def _sections(spec: JobSpec, index: int | None) -> Sections:
    """The searchable values (values or domains) of one branch (None = the control), by path section."""
    model = {k: getattr(spec.model, k) for k in type(spec.model).model_fields if k != "name"}
    train = {k: getattr(spec.train, k) for k in TRAIN_SEARCHABLE}
    if index is None:
        return {"loss": {}, "branch": {}, "train": train, "model": model}
    branch = spec.losses[index]
    extra = {"start_epoch": branch.start_epoch} if hasattr(branch, "start_epoch") else {}
    return {"loss": branch.loss_params(), "branch": extra, "train": train, "model": model}


def _assemble(
    spec: JobSpec, index: int | None, values: Sections, sample: int, repeat: int, config_id: str
) -> TrialConfig:
    """The trial of branch ``index`` (None = the control) with concrete ``values`` for its sections."""
    branch = spec.losses[index] if index is not None else None
    if branch is None:  # the control: plain cross-entropy, no re-weighting, same model and schedule
        rw = Reweighting()
    else:
        rw = branch.reweighting if branch.reweighting is not None else spec.reweighting
    fixed = spec.train.model_dump(exclude=set(TRAIN_SEARCHABLE))
    # Every config, the control included, runs with seeds train.seed + r: seed r of a branch pairs with the control's.
    train = TrainSchedule(**(fixed | values["train"] | {"seed": spec.train.seed + repeat}))
    shown = [f"branch.{k}" for k in values["branch"]]
    shown += [f"train.{k}" for k in TRAIN_SEARCHABLE if is_domain(getattr(spec.train, k))]
    shown += [f"model.{k}" for k in values["model"] if is_domain(getattr(spec.model, k))]
    return TrialConfig(
        branch="control" if branch is None else branch.key,
        branch_index=-1 if index is None else index,
        is_control=branch is None,
        loss="ce" if branch is None else branch.name,
        loss_params=values["loss"],
        loss_start_epoch=int(values["branch"].get("start_epoch", 0)),
        normalized=getattr(branch, "normalized", None),
        reweighting=rw,
        model=spec.model.name,
        model_params=values["model"],
        train=train,
        evaluation=evaluation_options(spec),
        sample_index=sample,
        repeat=repeat,
        config_id=config_id,
        shown=tuple(shown),
    )


def control_trial(spec: JobSpec, repeat: int = 0) -> TrialConfig:
    """The plain cross-entropy control: the same model and schedule, shared train domains at their centre."""
    values = {s: {k: v.center() if is_domain(v) else v for k, v in d.items()} for s, d in _sections(spec, None).items()}
    return _assemble(spec, None, values, 0, repeat, "control/0")


def plan_trials(spec: JobSpec) -> list[TrialConfig]:
    """Every trial of a random/grid search, control first; deterministic for a given ``tune.seed``.

    Each planned config (the control too) appears ``tune.repeats`` times in a row, with train seeds
    ``train.seed + r`` and one ``config_id``.
    """
    rng = np.random.default_rng(spec.tune.seed)
    grid_search = spec.tune.search == "grid"
    trials: list[TrialConfig] = []
    repeats = range(spec.tune.repeats)
    if spec.tune.control:
        trials += [control_trial(spec, r) for r in repeats]
    for index in range(len(spec.losses)):
        configs = 0  # numbers the branch's configs: config_id "<branch>/<n>"
        sections = _sections(spec, index)
        axes = [
            (s, k, axis)
            for s, d in sections.items()
            for k, v in d.items()
            if is_domain(v) and (axis := v.axis(grid_search)) is not None
        ]
        for combo in itertools.product(*[values for _, _, values in axes]):
            fixed = {(s, k): value for (s, k, _), value in zip(axes, combo, strict=True)}
            for sample in range(spec.tune.num_samples):
                values = {
                    s: {
                        k: fixed[(s, k)] if (s, k) in fixed else (v.sample(rng) if is_domain(v) else v)
                        for k, v in d.items()
                    }
                    for s, d in sections.items()
                }
                config_id = f"{spec.losses[index].key}/{configs}"
                configs += 1
                trials += [_assemble(spec, index, values, sample, r, config_id) for r in repeats]
    return trials


def resolve_trial(config: dict[str, Any]) -> TrialConfig:
    """The planned trial of a Tune config (``{"trial": TrialConfig or its JSON}``), validated; a ``Repeater``'s trial
    index (TPE with repeats) sets its repeat."""
    trial = TrialConfig.model_validate(config["trial"])
    index = config.get(TRIAL_INDEX)
    if index is None or int(index) == trial.repeat:
        return trial
    return trial.with_repeat(int(index), trial.train.seed - trial.repeat)


class TPESpace:
    """An Optuna define-by-run space: the control first, then ``branch`` and that branch's own parameters.

    Optuna's names for a branch's parameters are qualified by the branch's key (``focal.gamma``), which a conditional
    space needs; the trials it plans name them by the path scheme like every other trial.

    With ``tune.repeats`` > 1 a ``Repeater`` runs each suggestion once per seed and tells TPE their mean selection
    score (the mean validation metric over the config's repeats).

    A picklable callable (Tune checkpoints its searcher). Tune asks for suggestions from its one driver thread.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.control_pending = spec.tune.control
        self.suggested = 0  # numbers the configs (config_id); a Repeater copies one suggestion to all its repeats

    def __call__(self, ot_trial: Any) -> dict[str, TrialConfig]:
        spec = self.spec
        if self.control_pending:
            self.control_pending = False
            return {"trial": control_trial(spec)}
        keys = [b.key for b in spec.losses]
        key = ot_trial.suggest_categorical("branch", keys)
        index = keys.index(key)
        values: Sections = {}
        for s, d in _sections(spec, index).items():
            prefix = key if s in ("loss", "branch") else s
            values[s] = {k: v.suggest(ot_trial, f"{prefix}.{k}") if is_domain(v) else v for k, v in d.items()}
        self.suggested += 1
        return {"trial": _assemble(spec, index, values, 0, 0, f"{key}/{self.suggested}")}


def tpe_space(spec: JobSpec) -> TPESpace:
    """The conditional define-by-run space for TPE (see ``TPESpace``)."""
    return TPESpace(spec)
