"""Search-space translation and result collection, without Ray."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from jobs.plan import TRIAL_INDEX, plan_trials, resolve_trial, tpe_space
from jobs.results import ResultCollector
from jobs.spec import Choice, Grid, JobSpec, LogUniform, QUniform, RandInt, Uniform
from jobs.tune import asha_grace_period

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
    values = [domain.sample(rng) for _ in range(200)]
    assert all(check(v) for v in values)
    assert len({repr(v) for v in values}) > 1
    assert check(domain.center())


def test_loguniform_is_uniform_in_log_space():
    rng = np.random.default_rng(1)
    logs = np.log10([LogUniform(loguniform=(1e-4, 1.0)).sample(rng) for _ in range(4000)])
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
    assert control.is_control and control.loss == "ce" and control.loss_params == {}
    assert control.reweighting.scheme == "none" and control.branch == "control"
    focal = [t for t in trials if t.branch == "focal"]
    assert len(focal) == 3 and all(set(t.loss_params) == {"gamma"} for t in focal)
    assert len({t.loss_params["gamma"] for t in focal}) == 3
    ib = [t for t in trials if t.branch == "ib"]
    assert all(t.loss_start_epoch in (2, 4) and set(t.loss_params) == {"alpha", "epsilon"} for t in ib)
    ldam = [t for t in trials if t.branch == "ldam-drw"]
    assert all(t.normalized is True and t.reweighting.start_epoch == 6 for t in ldam)
    # Samples are configs, not seeds: every config trains with train.seed, paired with the control's seed.
    assert [t.train.seed for t in focal] == [0, 0, 0]
    assert len({t.config_id for t in focal}) == 3 and all(t.config["train.seed"] == 0 for t in focal)


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
    combos = {(t.loss_params["gamma"], t.train.lr) for t in plan_trials(s)}
    assert combos == {(0.5, 0.1), (0.5, 0.01), (2.0, 0.1), (2.0, 0.01)}
    g = spec(losses=[{"name": "focal", "gamma": {"choice": [1, 2, 3]}}], tune={"search": "grid", "control": False})
    assert sorted(t.loss_params["gamma"] for t in plan_trials(g)) == [1, 2, 3]


def test_control_takes_a_deterministic_center_of_shared_train_domains():
    s = spec(losses=[{"name": "ce"}], train={"epochs": 10, "lr": {"loguniform": [0.01, 1.0]}})
    assert math.isclose(plan_trials(s)[0].train.lr, 0.1)


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
    assert first.is_control
    seen = set()
    for _ in range(12):
        ot = study.ask()
        t = space(ot)["trial"]
        seen.add(t.branch)
        own = {k.split(".")[0] for k in ot.params} - {"branch", "train"}
        assert own == {t.branch}  # only the chosen branch's parameters were sampled
        assert 0.01 <= t.train.lr <= 1.0
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
    # selection "test": the choice of the published protocol, made and reported on the test metric
    s = spec(
        losses=[{"name": "focal", "gamma": {"choice": [1, 2]}}, {"name": "cdt"}],
        tune={"num_samples": 2},
        evaluation={"selection": "test"},
    )
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
    assert r["control_trial_id"] == "t0" and r["best_scope"] == "best_epoch" and r["selected_on"] == "test"
    focal, cdt = r["branches"]
    assert focal["best_trial_id"] == "t1" and math.isclose(focal["gain"], 0.1)
    assert math.isclose(cdt["gain"], -0.2) and cdt["trials"] == 1
    t3 = next(t for t in r["trials"] if t["trial_id"] == "t3")
    assert t3["status"] == "stopped" and len(t3["history"]) == 1
    assert t3["history"][0] == {"epoch": 1, "balanced_accuracy": 0.4, "accuracy": 0.4}


def test_collector_mode_min_and_duplicate_epochs():
    s = spec(losses=[{"name": "ce"}], tune={"metric": "nll"}, evaluation={"selection": "test"})
    c = ResultCollector(s)
    c.apply(
        {"type": "trial_started", "trial_id": "a", "branch": "ce", "branch_index": 0, "is_control": False, "config": {}}
    )
    for e, v in [(1, 2.0), (2, 1.0), (2, 1.0), (3, 1.5)]:
        c.apply({"type": "epoch", "trial_id": "a", "epoch": e, "metrics": {"epoch": e, "nll": v}})
    r = c.result()
    assert r["mode"] == "min" and r["best_trial"]["epoch"] == 2
    assert [h["epoch"] for h in r["trials"][0]["history"]] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------
# Repeats, selection on validation, paired gains


def test_repeats_plan_seeds_and_config_ids():
    s = spec(losses=[{"name": "focal", "gamma": {"choice": [1.0, 2.0]}}], tune={"num_samples": 2, "repeats": 3})
    trials = plan_trials(s)
    assert len(trials) == s.trial_count() == (1 + 2) * 3
    control = [t for t in trials if t.is_control]
    assert [t.train.seed for t in control] == [0, 1, 2] and len({t.config_id for t in control}) == 1
    focal = [t for t in trials if not t.is_control]
    by_config: dict[str, list] = {}
    for t in focal:
        by_config.setdefault(t.config_id, []).append(t)
    assert len(by_config) == 2
    for members in by_config.values():
        assert [t.train.seed for t in members] == [0, 1, 2]
        assert [t.config["train.seed"] for t in members] == [0, 1, 2]
        assert len({t.loss_params["gamma"] for t in members}) == 1  # one config, three seeds
        assert all(t.evaluation.metric == "val_balanced_accuracy" and t.evaluation.split for t in members)
    seeded = spec(losses=[{"name": "ce"}], train={"epochs": 10, "seed": 7}, tune={"repeats": 2})
    assert [t.train.seed for t in plan_trials(seeded)] == [7, 8, 7, 8]


def test_a_repeaters_trial_index_sets_the_seed_and_keeps_the_config_id():
    s = spec(losses=[{"name": "focal", "gamma": {"uniform": [0.5, 3.0]}}], train={"epochs": 10, "seed": 5})
    space = tpe_space(s)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space(study.ask())  # the control
    config = space(study.ask())
    assert config["trial"].config_id == "focal/1"
    repeats = [resolve_trial(config | {TRIAL_INDEX: r}) for r in range(3)]
    assert [t.train.seed for t in repeats] == [5, 6, 7] == [t.config["train.seed"] for t in repeats]
    assert {t.config_id for t in repeats} == {"focal/1"} and resolve_trial(config) is config["trial"]
    assert space(study.ask())["trial"].config_id == "focal/2"


def _val_metrics(epoch: int, val: float, test: float) -> dict:
    return {"epoch": epoch, "balanced_accuracy": test, "val_balanced_accuracy": val, "accuracy": test}


def _run(c, tid, branch, index, config_id, seed, epochs):
    c.apply(
        {
            "type": "trial_started",
            "trial_id": tid,
            "branch": branch,
            "branch_index": index,
            "is_control": branch == "control",
            "config": {"config_id": config_id, "train.seed": seed},
        }
    )
    for e, (val, test) in enumerate(epochs, 1):
        c.apply({"type": "epoch", "trial_id": tid, "epoch": e, "metrics": _val_metrics(e, val, test)})
    c.apply({"type": "trial_finished", "trial_id": tid, "status": "succeeded"})


def test_selection_on_val_reports_the_test_metric_at_the_best_val_epoch():
    s = spec(losses=[{"name": "focal"}], tune={"control": False})
    c = ResultCollector(s)
    # The test metric peaks at epoch 3, the validation metric at epoch 2: the trial reports epoch 2's test figure.
    _run(c, "a", "focal", 0, "focal/0", 0, [(0.5, 0.50), (0.8, 0.60), (0.7, 0.90), (0.6, 0.55)])
    r = c.result()
    (t,) = r["trials"]
    val = [h["val_balanced_accuracy"] for h in t["history"]]
    assert t["selected"]["epoch"] == int(np.argmax(val)) + 1 == 2
    assert t["selected"]["test"]["balanced_accuracy"] == t["history"][1]["balanced_accuracy"] == 0.60
    assert t["selected"]["val"]["balanced_accuracy"] == 0.8
    assert t["best"] == {"epoch": 2, "value": 0.60, "metrics": _val_metrics(2, 0.8, 0.60)}
    assert r["selected_on"] == "val" and r["selection_metric"] == "val_balanced_accuracy"
    assert r["best_trial"]["epoch"] == 2 and r["best_trial"]["value"] == 0.60
    # evaluation.epoch "last": the final epoch, whatever the metrics say
    last = ResultCollector(spec(losses=[{"name": "focal"}], evaluation={"epoch": "last"}))
    _run(last, "a", "focal", 0, "focal/0", 0, [(0.5, 0.50), (0.8, 0.60), (0.7, 0.90), (0.6, 0.55)])
    r = last.result()
    assert r["trials"][0]["selected"]["epoch"] == 4 and r["best_scope"] == "last_epoch"
    # selection "test" on the same trial reproduces the old choice (best test epoch) and says so
    on_test = ResultCollector(spec(losses=[{"name": "focal"}], evaluation={"selection": "test"}))
    _run(on_test, "a", "focal", 0, "focal/0", 0, [(0.5, 0.50), (0.8, 0.60), (0.7, 0.90), (0.6, 0.55)])
    r = on_test.result()
    assert r["trials"][0]["best"]["epoch"] == 3 and r["trials"][0]["best"]["value"] == 0.90
    assert r["selected_on"] == "test" and r["selection_metric"] == "balanced_accuracy"


def test_branch_config_is_chosen_on_mean_val_and_the_gain_is_paired_with_a_t_interval():
    from scipy import stats

    s = spec(losses=[{"name": "focal", "gamma": {"choice": [1.0, 2.0]}}], tune={"num_samples": 2, "repeats": 3})
    c = ResultCollector(s)
    control = {0: 0.50, 1: 0.40, 2: 0.45}
    # focal/a: higher test, lower validation; focal/b: best mean validation -> the branch's config.
    a = {0: (0.60, 0.70), 1: (0.60, 0.66), 2: (0.61, 0.71)}
    b = {0: (0.70, 0.55), 1: (0.72, 0.47), 2: (0.69, 0.49)}
    for seed in range(3):
        _run(c, f"c{seed}", "control", -1, "control/0", seed, [(0.5, control[seed])])
        _run(c, f"a{seed}", "focal", 0, "focal/a", seed, [a[seed]])
        _run(c, f"b{seed}", "focal", 0, "focal/b", seed, [b[seed]])
    r = c.result()
    (row,) = r["branches"]
    assert row["config_id"] == "focal/b" and row["n_seeds"] == 3 and row["n_pairs"] == 3
    assert row["config"] == {} and row["trials"] == 6  # the config without seed and config_id
    diffs = [b[seed][1] - control[seed] for seed in range(3)]
    assert row["gain"] == pytest.approx(np.mean(diffs))
    assert row["gain_std"] == pytest.approx(np.std(diffs, ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert row["gain_ci95"] == [pytest.approx(lo), pytest.approx(hi)]
    # by hand: t(0.975, 2) = 4.303
    assert hi - lo == pytest.approx(2 * 4.3027 * np.std(diffs, ddof=1) / math.sqrt(3), rel=1e-4)
    assert row["significant"] is bool(lo > 0 or hi < 0)
    assert row["test_mean"] == pytest.approx(np.mean([b[k][1] for k in range(3)]))
    assert row["test_std"] == pytest.approx(np.std([b[k][1] for k in range(3)], ddof=1))
    assert row["val_mean"] == pytest.approx(np.mean([b[k][0] for k in range(3)]))
    assert row["control_value"] == pytest.approx(np.mean(list(control.values())))
    assert row["best_trial_id"] == "b1" and r["best_trial"]["trial_id"] == "b1"  # best validation, not best test
    assert r["repeats"] == 3 and r["control_config_id"] == "control/0"
    assert {t["trial_id"]: t["seed"] for t in r["trials"]}["b2"] == 2


def test_a_single_pair_has_no_interval_and_a_clear_gain_is_significant():
    s = spec(losses=[{"name": "focal"}])
    c = ResultCollector(s)
    _run(c, "c0", "control", -1, "control/0", 0, [(0.5, 0.5)])
    _run(c, "f0", "focal", 0, "focal/0", 0, [(0.6, 0.6)])
    (row,) = c.result()["branches"]
    assert row["gain"] == pytest.approx(0.1) and row["gain_ci95"] is None and row["gain_std"] is None
    assert row["significant"] is False
    s = spec(losses=[{"name": "focal"}], tune={"repeats": 4})
    c = ResultCollector(s)
    for seed, d in enumerate([0.10, 0.12, 0.11, 0.09]):
        _run(c, f"c{seed}", "control", -1, "control/0", seed, [(0.5, 0.5)])
        _run(c, f"f{seed}", "focal", 0, "focal/0", seed, [(0.6, 0.5 + d)])
    (row,) = c.result()["branches"]
    assert row["gain_ci95"][0] > 0 and row["significant"] is True


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"dataset": {"name": "digits_lt", "test_per_class": 1}}, "evaluation.val_fraction"),
        ({"dataset": {"name": "digits_lt", "test_per_class": 4}, "evaluation": {"val_fraction": 0.1}}, "val_fraction"),
        ({"tune": {"repeats": 21}}, "repeats"),
        ({"evaluation": {"val_fraction": 1.0}}, "val_fraction"),
        ({"evaluation": {"selection": "train"}}, "selection"),
    ],
)
def test_impossible_evaluation_settings_name_the_field(kw, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        spec(losses=[{"name": "ce"}], **kw)
    # A split of one test image per class is fine when nothing is chosen on validation.
    spec(losses=[{"name": "ce"}], dataset={"name": "digits_lt", "test_per_class": 1}, evaluation={"selection": "test"})


def test_repeats_count_against_the_trial_limit():
    from jobs.spec import LimitExceeded, Limits

    data = BASE | {"losses": [{"name": "ce"}], "tune": {"num_samples": 1, "repeats": 5}}
    assert JobSpec.model_validate(data).trial_count() == 10
    with pytest.raises(LimitExceeded, match="tune.repeats: the job would run 10 trials"):
        Limits(max_trials=8).check(JobSpec.model_validate(data))


def test_tpe_with_repeats_is_told_the_mean_over_a_configs_seeds():
    from jobs.results import SELECTION_SCORE
    from jobs.tune import make_search_alg

    s = spec(losses=[{"name": "focal", "gamma": {"uniform": [0.5, 3.0]}}], tune={"search": "tpe", "repeats": 3})
    searcher = make_search_alg(s)
    searcher.set_search_properties(SELECTION_SCORE, "max", {})
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(6)}
    trials = {k: resolve_trial(c) for k, c in configs.items()}
    assert [c[TRIAL_INDEX] for c in configs.values()] == [0, 1, 2, 0, 1, 2]
    assert [t.config_id for t in trials.values()] == ["control/0"] * 3 + ["focal/1"] * 3
    assert [t.train.seed for t in trials.values()] == [0, 1, 2, 0, 1, 2]
    scores = {"t0": 0.5, "t1": 0.6, "t2": 0.4, "t3": 0.9, "t4": 0.3, "t5": 0.6}
    for tid, score in scores.items():
        searcher.on_trial_complete(tid, {SELECTION_SCORE: score})
    study = searcher.searcher._ot_study
    values = sorted(t.value for t in study.trials if t.value is not None)
    assert values == pytest.approx([0.5, 0.6])  # one Optuna trial per config, scored by its seeds' mean


def test_asha_with_repeats_stops_seeds_individually_and_never_the_control():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from jobs.results import SELECTION_SCORE
    from jobs.tune import _make_scheduler

    s = spec(
        losses=[{"name": "focal"}],
        train={"epochs": 4},
        tune={"scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "repeats": 2},
    )
    trials = {t.config_id + f"#{t.repeat}": t for t in plan_trials(s)}
    scheduler = _make_scheduler(s)
    scheduler.set_search_properties(SELECTION_SCORE, "max")
    fake = {k: SimpleNamespace(trial_id=k, config={"trial": t}) for k, t in trials.items()}
    for t in fake.values():
        scheduler.on_trial_add(None, t)

    def report(key: str, score: float) -> str:
        return scheduler.on_trial_result(None, fake[key], {"training_iteration": 1, SELECTION_SCORE: score})

    assert report("control/0#0", 0.9) == TrialScheduler.CONTINUE
    assert report("focal/0#0", 0.5) == TrialScheduler.STOP  # below the rung's median: this seed stops ...
    assert report("focal/0#1", 0.95) == TrialScheduler.CONTINUE  # ... while the same config's other seed goes on
    assert report("control/0#1", 0.1) == TrialScheduler.CONTINUE  # the control is never stopped


def test_a_branchs_best_metrics_average_the_metrics_only_and_list_each_seeds_epoch():
    s = spec(losses=[{"name": "focal"}], tune={"repeats": 2, "control": False})
    c = ResultCollector(s)
    # seed 0 selects epoch 2, seed 1 epoch 3 (best validation); their epochs must not be averaged into "2.5"
    for seed, epochs in ((0, [(0.5, 0.50), (0.8, 0.60), (0.7, 0.90)]), (1, [(0.5, 0.50), (0.6, 0.55), (0.9, 0.70)])):
        c.apply(
            {
                "type": "trial_started",
                "trial_id": f"f{seed}",
                "branch": "focal",
                "branch_index": 0,
                "is_control": False,
                "config": {"config_id": "focal/0", "train.seed": seed},
            }
        )
        for e, (val, test) in enumerate(epochs, 1):
            metrics = _val_metrics(e, val, test) | {"lr": 0.1 / e, "epoch_time_s": 2.0 * e, "posthoc_tau": 1.0 * e}
            metrics |= {"train_loss": 1.0 / e, "posthoc_balanced_accuracy": test + 0.01}
            c.apply({"type": "epoch", "trial_id": f"f{seed}", "epoch": e, "metrics": metrics})
        c.apply({"type": "trial_finished", "trial_id": f"f{seed}", "status": "succeeded"})
    (row,) = c.result()["branches"]
    assert row["seed_epochs"] == [2, 3] and row["n_seeds"] == 2
    m = row["best_metrics"]
    assert not {"epoch", "lr", "epoch_time_s", "posthoc_tau"} & set(m)
    assert m["balanced_accuracy"] == pytest.approx((0.60 + 0.70) / 2) == row["test_mean"]
    assert m["val_balanced_accuracy"] == pytest.approx((0.8 + 0.9) / 2)
    assert m["train_loss"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert m["posthoc_balanced_accuracy"] == pytest.approx((0.61 + 0.71) / 2)


def test_a_config_stored_before_the_path_scheme_still_gives_the_trials_seed():
    from jobs.results import trial_identity

    assert trial_identity({"config_id": "focal/0", "train.seed": 3}) == {"config_id": "focal/0", "seed": 3}
    assert trial_identity({"config_id": "focal/0", "seed": 2}) == {"config_id": "focal/0", "seed": 2}
    assert trial_identity(None) == {"config_id": None, "seed": None}


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_the_control_summary_is_the_controls_mean_over_its_seeds(n_seeds):
    s = spec(losses=[{"name": "focal"}], tune={"repeats": n_seeds})
    c = ResultCollector(s)
    # (val, test) per epoch; each seed selects a different epoch on validation
    control = {
        0: [(0.5, 0.50), (0.8, 0.61), (0.7, 0.90)],
        1: [(0.9, 0.42), (0.6, 0.55), (0.7, 0.80)],
        2: [(0.5, 0.47), (0.6, 0.52), (0.8, 0.58)],
    }
    for seed in range(n_seeds):
        _run(c, f"c{seed}", "control", -1, "control/0", seed, control[seed])
        _run(c, f"f{seed}", "focal", 0, "focal/0", seed, [(0.5, 0.6)])
    r = c.result()
    selected = [max(range(3), key=lambda e, seed=seed: control[seed][e][0]) for seed in range(n_seeds)]
    vals = [control[seed][e][0] for seed, e in zip(range(n_seeds), selected, strict=True)]
    tests = [control[seed][e][1] for seed, e in zip(range(n_seeds), selected, strict=True)]
    summary = r["control_summary"]
    assert summary["n_seeds"] == n_seeds and summary["config_id"] == "control/0"
    assert summary["trial_ids"] == [f"c{seed}" for seed in range(n_seeds)]
    assert summary["seed_epochs"] == [e + 1 for e in selected] == [2, 1, 3][:n_seeds]
    assert summary["test_mean"] == pytest.approx(np.mean(tests))
    assert summary["val_mean"] == pytest.approx(np.mean(vals))
    assert summary["test_std"] == (pytest.approx(np.std(tests, ddof=1)) if n_seeds > 1 else None)
    # the same keys a branch's best_metrics averages, each the mean over the seeds
    assert set(summary["best_metrics"]) == set(r["branches"][0]["best_metrics"])
    assert summary["best_metrics"]["balanced_accuracy"] == pytest.approx(np.mean(tests))
    assert summary["best_metrics"]["accuracy"] == pytest.approx(np.mean(tests))
    assert summary["best_metrics"]["val_balanced_accuracy"] == pytest.approx(np.mean(vals))
    # the branches' control_value is the same mean, paired by seed
    assert r["branches"][0]["control_value"] == pytest.approx(summary["test_mean"])


def test_no_control_no_control_summary():
    c = ResultCollector(spec(losses=[{"name": "focal"}], tune={"control": False}))
    _run(c, "f0", "focal", 0, "focal/0", 0, [(0.5, 0.6)])
    assert c.result()["control_summary"] is None
