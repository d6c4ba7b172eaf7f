"""Search-space translation and result collection, without Ray."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from jobs.spec import Choice, Grid, JobSpec, LogUniform, QUniform, RandInt, Uniform
from jobs.tune import ResultCollector, asha_grace_period, center_value, plan_trials, sample_domain, tpe_space

BASE = {"dataset": {"name": "digits_lt"}, "train": {"epochs": 10}}


def spec(**kw) -> JobSpec:
    return JobSpec.model_validate(BASE | kw)


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
def test_every_domain_samples_inside_itself(domain, check):
    rng = np.random.default_rng(0)
    values = [sample_domain(domain, rng) for _ in range(200)]
    assert all(check(v) for v in values)
    assert len({repr(v) for v in values}) > 1
    assert check(center_value(domain))


def test_loguniform_is_uniform_in_log_space():
    rng = np.random.default_rng(1)
    logs = np.log10([sample_domain(LogUniform(loguniform=(1e-4, 1.0)), rng) for _ in range(4000)])
    assert abs(np.mean(logs) - (-2.0)) < 0.1  # a plain uniform would put the mean near log10(0.5)


def test_plan_has_control_first_and_each_branch_samples_only_its_own_params():
    s = spec(
        losses=[
            {"name": "focal", "gamma": {"uniform": [0.5, 3.0]}},
            {"name": "ib", "alpha": {"loguniform": [100, 10000]}, "start_epoch": {"choice": [2, 4]}},
            {"name": "ldam", "label": "ldam-drw", "reweighting": {"scheme": "effective_number", "start_epoch": 6}},
        ],
        tune={"num_samples": 3},
    )
    trials = plan_trials(s)
    assert len(trials) == s.trial_count() == 10
    control = trials[0]
    assert control["is_control"] and control["loss"] == "ce" and control["loss_params"] == {}
    assert control["reweighting"]["scheme"] == "none" and control["branch"] == "control"
    focal = [t for t in trials if t["branch"] == "focal"]
    assert len(focal) == 3 and all(set(t["loss_params"]) == {"gamma"} for t in focal)
    assert len({t["loss_params"]["gamma"] for t in focal}) == 3
    ib = [t for t in trials if t["branch"] == "ib"]
    assert all(t["loss_start_epoch"] in (2, 4) and set(t["loss_params"]) == {"alpha", "epsilon"} for t in ib)
    ldam = [t for t in trials if t["branch"] == "ldam-drw"]
    assert all(t["normalized"] is True and t["reweighting"]["start_epoch"] == 6 for t in ldam)
    assert [t["train"]["seed"] for t in focal] == [0, 1, 2]  # repeats differ by seed


def test_plan_is_deterministic_per_seed():
    kw = {"losses": [{"name": "focal", "gamma": {"uniform": [0.5, 3.0]}}], "tune": {"num_samples": 4, "seed": 3}}
    assert plan_trials(spec(**kw)) == plan_trials(spec(**kw))
    other = kw | {"tune": {"num_samples": 4, "seed": 4}}
    assert plan_trials(spec(**kw)) != plan_trials(spec(**other))


def test_grid_axes_expand_and_grid_search_expands_choices():
    s = spec(
        losses=[{"name": "focal", "gamma": {"grid": [0.5, 2.0]}}],
        train={"epochs": 10, "lr": {"grid": [0.1, 0.01]}},
        tune={"num_samples": 1, "control": False},
    )
    combos = {(t["loss_params"]["gamma"], t["train"]["lr"]) for t in plan_trials(s)}
    assert combos == {(0.5, 0.1), (0.5, 0.01), (2.0, 0.1), (2.0, 0.01)}
    g = spec(losses=[{"name": "focal", "gamma": {"choice": [1, 2, 3]}}], tune={"search": "grid", "control": False})
    assert sorted(t["loss_params"]["gamma"] for t in plan_trials(g)) == [1, 2, 3]


def test_control_takes_a_deterministic_center_of_shared_train_domains():
    s = spec(losses=[{"name": "ce"}], train={"epochs": 10, "lr": {"loguniform": [0.01, 1.0]}})
    assert math.isclose(plan_trials(s)[0]["train"]["lr"], 0.1)


def test_tpe_space_gives_control_first_then_conditional_branches():
    s = spec(
        losses=[
            {"name": "focal", "gamma": {"uniform": [0.5, 3.0]}},
            {"name": "logit_adjusted", "tau": {"choice": [1, 2]}},
        ],
        train={"epochs": 10, "lr": {"loguniform": [0.01, 1.0]}},
        tune={"search": "tpe", "num_samples": 3},
    )
    space = tpe_space(s)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    first = space(study.ask())["trial"]
    assert first["is_control"]
    seen = set()
    for _ in range(12):
        ot = study.ask()
        t = space(ot)["trial"]
        seen.add(t["branch"])
        own = {k.split(".")[0] for k in ot.params} - {"branch", "train"}
        assert own == {t["branch"]}  # only the chosen branch's parameters were sampled
        assert 0.01 <= t["train"]["lr"] <= 1.0
    assert seen == {"focal", "logit_adjusted"}


def test_asha_grace_never_precedes_rebalancing():
    assert asha_grace_period(spec(losses=[{"name": "ce"}])) == 1
    s = spec(losses=[{"name": "ib", "start_epoch": 4}], tune={"scheduler": "asha", "grace_period": 2})
    assert asha_grace_period(s) == 5
    s = spec(losses=[{"name": "ldam"}], reweighting={"scheme": "inverse", "start_epoch": 7})
    assert asha_grace_period(s) == 8


def _metrics(value: float, epoch: int) -> dict:
    return {"epoch": epoch, "balanced_accuracy": value, "accuracy": value, "per_class_accuracy": [value, value]}


def test_collector_builds_best_trial_and_gains_over_control():
    s = spec(losses=[{"name": "focal", "gamma": {"choice": [1, 2]}}, {"name": "cdt"}], tune={"num_samples": 2})
    c = ResultCollector(s, {"name": "digits_lt"})
    runs = {
        "t0": ("control", -1, True, [0.5, 0.6]),
        "t1": ("focal", 0, False, [0.55, 0.7]),
        "t2": ("focal", 0, False, [0.65, 0.62]),
        "t3": ("cdt", 1, False, [0.4]),
    }
    for tid, (branch, index, control, values) in runs.items():
        c.apply(
            {
                "type": "trial_started",
                "trial_id": tid,
                "branch": branch,
                "branch_index": index,
                "is_control": control,
                "config": {},
            }
        )
        for e, v in enumerate(values, 1):
            c.apply({"type": "epoch", "trial_id": tid, "epoch": e, "metrics": _metrics(v, e)})
        c.apply({"type": "trial_finished", "trial_id": tid, "status": "succeeded" if len(values) == 2 else "stopped"})
    r = c.result()
    assert r["best_trial"]["trial_id"] == "t1" and r["best_trial"]["epoch"] == 2
    assert r["control_trial_id"] == "t0" and r["best_scope"] == "best_epoch"
    focal, cdt = r["branches"]
    assert focal["best_trial_id"] == "t1" and math.isclose(focal["gain"], 0.1)
    assert math.isclose(cdt["gain"], -0.2) and cdt["trials"] == 1
    t3 = next(t for t in r["trials"] if t["trial_id"] == "t3")
    assert t3["status"] == "stopped" and len(t3["history"]) == 1
    assert t3["history"][0] == {"epoch": 1, "balanced_accuracy": 0.4, "accuracy": 0.4}


def test_collector_mode_min_and_duplicate_epochs():
    s = spec(losses=[{"name": "ce"}], tune={"metric": "nll"})
    c = ResultCollector(s)
    c.apply(
        {"type": "trial_started", "trial_id": "a", "branch": "ce", "branch_index": 0, "is_control": False, "config": {}}
    )
    for e, v in [(1, 2.0), (2, 1.0), (2, 1.0), (3, 1.5)]:
        c.apply({"type": "epoch", "trial_id": "a", "epoch": e, "metrics": {"epoch": e, "nll": v}})
    r = c.result()
    assert r["mode"] == "min" and r["best_trial"]["epoch"] == 2
    assert [h["epoch"] for h in r["trials"][0]["history"]] == [1, 2, 3]
