"""The planner's output: one typed, frozen TrialConfig per trial, its parameters named by one path scheme."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
import pytest
from pydantic import ValidationError

from jobs.plan import TRIAL_INDEX, TrialConfig, plan_trials, resolve_trial, tpe_space
from jobs.spec import Choice, Grid, JobSpec, LogUniform, QUniform, RandInt, Uniform

PATH = re.compile(r"^(loss|branch|train|model)\.[a-z_]+$")
BRANCHES = [
    {"name": "ib", "alpha": {"loguniform": [100, 10000]}, "start_epoch": {"choice": [2, 4]}},
    {"name": "focal", "gamma": {"uniform": [0.5, 3.0]}},
    {"name": "ldam", "label": "ldam-drw", "reweighting": {"scheme": "effective_number", "start_epoch": 6}},
]


def spec(search: str = "random", **kw) -> JobSpec:
    grid = search == "grid"
    losses = [
        {"name": "ib", "alpha": {"choice": [100, 1000]}, "start_epoch": {"choice": [2, 4]}},
        {"name": "focal", "gamma": {"choice": [0.5, 2.0]}},
        BRANCHES[2],
    ]
    return JobSpec.model_validate(
        {
            "dataset": {"name": "digits_lt"},
            "model": {"name": "mlp", "dropout": {"choice": [0.0, 0.2]} if grid else {"uniform": [0.0, 0.5]}},
            "train": {"epochs": 10, "lr": {"choice": [0.1, 0.01]} if grid else {"loguniform": [0.01, 1.0]}},
            "losses": losses if grid else BRANCHES,
            "tune": {"search": search, "num_samples": 1 if grid else 2, "repeats": 2},
        }
        | kw
    )


def tpe_trials(s: JobSpec, n: int = 15) -> list[TrialConfig]:
    space = tpe_space(s)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space(study.ask())["trial"] for _ in range(n)]


def test_every_config_key_is_a_parameter_path_or_the_config_id():
    planned = {
        "random": plan_trials(spec()),
        "grid": plan_trials(spec("grid")),
        "tpe": tpe_trials(spec("tpe")),
    }
    for search, trials in planned.items():
        assert {t.branch for t in trials} == {"control", "ib", "focal", "ldam-drw"}, search
        for t in trials:
            bad = [k for k in t.config if k != "config_id" and not PATH.match(k)]
            assert not bad, (search, t.branch, bad)
    # What each path holds, on the random plan: the loss's own, the branch's, the searched train and model params.
    trials = planned["random"]
    control, ib, ldam = trials[0], trials[2], trials[-1]
    assert control.is_control and set(control.config) == {
        "train.lr",
        "model.dropout",
        "branch.reweighting",
        "train.seed",
        "config_id",
    }
    assert ib.config["branch.start_epoch"] == ib.loss_start_epoch in (2, 4)
    assert ib.config["loss.alpha"] == ib.loss_params["alpha"] and ib.config["train.lr"] == ib.train.lr
    assert ib.config["model.dropout"] == ib.model_params["dropout"] and ib.config["train.seed"] == ib.train.seed == 0
    assert ldam.config["branch.reweighting"] == "effective_number-drw" and ldam.config["train.seed"] == 1
    assert all(t.config["config_id"] == t.config_id for t in trials)
    # TPE's Optuna names stay branch-qualified (a conditional space needs that); the trials it plans do not show them.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = tpe_space(spec("tpe"))
    space(study.ask())  # the control
    ot = study.ask()
    t = space(ot)["trial"]
    assert {k.split(".")[0] for k in ot.params} - {"branch", "train", "model"} == {t.branch}
    assert not any(k.startswith(f"{t.branch}.") for k in t.config)


def test_a_repeat_changes_the_seed_in_the_config_and_keeps_the_config_id():
    s = spec("tpe")
    t = tpe_trials(s, 2)[1]
    repeated = resolve_trial({"trial": t, TRIAL_INDEX: 1})
    assert repeated.repeat == 1 and repeated.config["train.seed"] == 1 and repeated.config_id == t.config_id
    assert {k: v for k, v in repeated.config.items() if k != "train.seed"} == {
        k: v for k, v in t.config.items() if k != "train.seed"
    }


def test_a_trial_is_frozen_and_crosses_to_a_worker_as_json_validated_there():
    t = plan_trials(spec())[3]
    with pytest.raises(ValidationError, match="frozen"):
        t.loss = "focal"  # type: ignore[misc]
    sent = json.loads(json.dumps(t.model_dump(mode="json")))  # what the driver hands the worker
    assert TrialConfig.model_validate(sent) == t
    assert resolve_trial({"trial": sent}) == t
    with pytest.raises(ValidationError, match="lr_typo"):
        TrialConfig.model_validate(sent | {"train": sent["train"] | {"lr_typo": 0.1}})
    with pytest.raises(ValidationError, match="optimizer"):
        TrialConfig.model_validate(sent | {"train": sent["train"] | {"optimizer": "adam"}})
    with pytest.raises(KeyError, match="train.nope"):
        t.param("train.nope")


def test_planning_imports_neither_ray_nor_torch():
    code = (
        "import sys; from jobs.plan import plan_trials; from jobs.spec import JobSpec; "
        "plan_trials(JobSpec.model_validate({'dataset': {'name': 'digits_lt'}, 'losses': [{'name': 'focal'}]})); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'optuna'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("domain", "check"),
    [
        (Choice(choice=[0.5, 1.0, 2.0]), lambda v: v in (0.5, 1.0, 2.0)),
        (Grid(grid=["sgd", "adamw"]), lambda v: v in ("sgd", "adamw")),
        (Uniform(uniform=(0.1, 0.2)), lambda v: 0.1 <= v <= 0.2),
        (LogUniform(loguniform=(1e-3, 1e-1)), lambda v: 1e-3 <= v <= 1e-1),
        (RandInt(randint=(2, 5)), lambda v: isinstance(v, int) and 2 <= v < 5),
        (QUniform(quniform=(0.0, 1.0, 0.25)), lambda v: v in (0.0, 0.25, 0.5, 0.75, 1.0)),
        (QUniform(quniform=(10, 50, 10)), lambda v: isinstance(v, int) and v % 10 == 0 and 10 <= v <= 50),
    ],
)
def test_every_domain_suggests_inside_itself_through_optuna(domain, check):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [domain.suggest(study.ask(), "x") for _ in range(60)]
    assert all(check(v) for v in values)
    assert len({repr(v) for v in values}) > 1


def test_finite_domains_list_their_values_and_only_grids_are_always_axes():
    assert Choice(choice=[1, 2]).values() == [1, 2] and Grid(grid=["a"]).values() == ["a"]
    with pytest.raises(TypeError, match="uniform is not a finite domain"):
        Uniform(uniform=(0, 1)).values()
    assert Grid(grid=[1, 2]).axis(grid_search=False) == [1, 2]
    assert Choice(choice=[1, 2]).axis(grid_search=False) is None and Choice(choice=[1, 2]).axis(grid_search=True)
    assert RandInt(randint=(2, 5)).extremes() == [2, 4] and RandInt(randint=(2, 5)).axis(grid_search=True) is None
