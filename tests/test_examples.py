"""Every example spec in examples/ validates against JobSpec (under the service's default limits) and shows
what its comments say it shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.spec import Grid, JobSpec, Limits, LogUniform, RandInt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.yml"))
# The service's default limits (LONGTAIL_MAX_TRIALS_PER_JOB, LONGTAIL_MAX_EPOCHS): examples must pass them.
LIMITS = Limits(max_trials=64, max_epochs=500)

DEMO_LOSSES = {"ce", "focal", "label_smoothing", "seql", "ib", "cdt", "ldam", "balanced_softmax", "logit_adjusted"}


def load(name: str) -> JobSpec:
    return LIMITS.check(JobSpec.model_validate(yaml.safe_load((EXAMPLES / name).read_text())))


def test_the_examples_are_there():
    names = {p.name for p in FILES}
    assert {"digits-demo.yaml", "cifar10-lt.yaml", "ib-tpe-asha.yaml", "ddp-2-workers.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_validates(path: Path):
    text = path.read_text()
    assert text.lstrip().startswith("#"), "each example opens with comments: what it shows, what to change"
    data = yaml.safe_load(text)
    spec = LIMITS.check(JobSpec.model_validate(data))
    assert LIMITS.max_trials is not None and spec.trial_count() <= LIMITS.max_trials
    # The spec round-trips through its JSON form (what the client sends).
    assert LIMITS.check(JobSpec.model_validate(spec.model_dump(mode="json"))) == spec


def test_digits_demo_compares_all_losses():
    spec = load("digits-demo.yaml")
    assert spec.dataset.name == "digits_lt" and spec.dataset.imbalance_factor == 50
    assert spec.model.name == "mlp"
    # cross-entropy is the control trial (tune.control), every other loss a branch of its own
    assert spec.tune.control and {b.name for b in spec.losses} | {"ce"} == DEMO_LOSSES
    assert len(spec.losses) == len(DEMO_LOSSES) - 1
    branches = {b.key: b for b in spec.losses}
    ldam = branches["ldam-drw"]
    assert ldam.name == "ldam"
    assert ldam.reweighting is not None and ldam.reweighting.scheme == "effective_number"
    assert 0 < ldam.reweighting.start_epoch < spec.train.epochs
    ib = branches["ib"]
    assert isinstance(ib.alpha, LogUniform) and ib.start_epoch != 0
    # A small search on several branches, and two 1-CPU trials fit on 2 cores.
    assert sum(1 for _ in spec.iter_domains()) >= 3
    assert spec.scaling.cpus_per_worker == 1
    assert spec.trial_resources()["CPU"] <= 1.0
    assert spec.tune.max_concurrent_trials is None  # as many trials at once as the cluster holds
    assert spec.tune.control


def test_cifar10_lt_is_the_published_recipe():
    spec = load("cifar10-lt.yaml")
    assert spec.dataset.name == "cifar10_lt" and spec.dataset.imbalance_factor == 100
    assert spec.dataset.path == "cifar-10-batches-py"
    assert spec.model.name == "resnet32"
    t = spec.train
    assert (t.epochs, t.batch_size, t.optimizer, t.lr, t.momentum, t.weight_decay) == (200, 128, "sgd", 0.1, 0.9, 2e-4)
    assert (t.schedule, t.milestones, t.lr_decay, t.warmup_epochs) == ("step", [160, 180], 0.01, 5)
    assert spec.scaling.use_gpu and spec.scaling.gpus == 1.0
    branches = {b.key: b for b in spec.losses}
    assert branches["ldam-drw"].reweighting.scheme == "effective_number"
    assert branches["ldam-drw"].reweighting.start_epoch == 160
    assert branches["ib"].start_epoch == 100
    assert {b.name for b in spec.losses} >= DEMO_LOSSES


def test_ib_tpe_asha_searches_alpha_and_warmup():
    spec = load("ib-tpe-asha.yaml")
    assert (spec.tune.search, spec.tune.scheduler) == ("tpe", "asha")
    assert [b.name for b in spec.losses] == ["ib"]
    ib = spec.losses[0]
    assert isinstance(ib.alpha, LogUniform)
    assert isinstance(ib.start_epoch, RandInt)
    assert not list(spec.iter_domains(kinds=(Grid,)))
    # The written grace period already covers the latest warm-up (the service would raise it to that anyway).
    assert spec.tune.grace_period is not None
    assert spec.tune.grace_period >= spec.rebalancing_start() + 1
    assert spec.tune.grace_period < spec.train.epochs


def test_ddp_example_uses_two_workers():
    spec = load("ddp-2-workers.yaml")
    assert spec.scaling.num_workers == 2
    # Fits a 2-CPU machine: both workers and the trial's driver.
    assert spec.trial_resources()["CPU"] <= 2.0


def test_imagenet_lt_is_file_lists_resnext50_90_epochs_on_4_gpus():
    spec = load("imagenet-lt.yaml")
    assert spec.dataset.name == "file_list" and spec.dataset.val is not None
    assert spec.model.name == "resnext50_32x4d" and spec.train.epochs == 90
    assert spec.scaling.num_workers == 4 and spec.scaling.use_gpu and spec.scaling.gpus == 1
    assert {loc for loc, _, _ in spec.spec_paths()} == {"dataset.root", "dataset.train", "dataset.val", "dataset.test"}


def test_inaturalist_is_resnet50_on_file_lists():
    spec = load("inaturalist-2018.yaml")
    assert spec.dataset.name == "file_list" and spec.model.name == "resnet50"
    assert spec.dataset.imbalance_factor is None  # already long-tailed


def test_tabular_example_reads_a_table():
    spec = load("tabular-fraud.yaml")
    assert spec.dataset.name == "tabular" and spec.dataset.label == "is_fraud" and spec.dataset.features is None
    assert spec.trial_count() == 5  # focal, balanced softmax, two logit-adjusted taus, the control
