"""The job spec: the public JSON shape, defaults, domains and every validation error."""

from __future__ import annotations

import inspect
import json

import pytest
from pydantic import ValidationError

from jobs.spec import BRANCH_MODELS, JobSpec, LimitExceeded, Limits, is_domain

EXAMPLE = {
    "api_version": "v1",
    "name": "digits-demo",
    "dataset": {"name": "digits_lt", "imbalance_factor": 50, "seed": 0},
    "model": {"name": "mlp", "hidden_sizes": [128]},
    "losses": [
        {"name": "ce"},
        {"name": "focal", "gamma": {"choice": [0.5, 1.0, 2.0]}},
        {"name": "ib", "alpha": {"loguniform": [100, 10000]}, "start_epoch": 10},
    ],
    "reweighting": {"scheme": "none"},
    "train": {
        "epochs": 30,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": {"loguniform": [0.01, 0.5]},
        "weight_decay": 5e-4,
        "seed": 0,
    },
    "scaling": {"num_workers": 1, "use_gpu": False},
    "tune": {
        "num_samples": 2,
        "metric": "balanced_accuracy",
        "mode": "max",
        "search": "random",
        "scheduler": "fifo",
        "max_concurrent_trials": 2,
        "control": True,
    },
}


def errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def with_(**changes) -> dict:
    data = json.loads(json.dumps(EXAMPLE))
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(leaf) if leaf.isdigit() else leaf] = value
    return data


def test_issue_example_validates_and_round_trips():
    spec = JobSpec.model_validate(EXAMPLE)
    assert spec.trial_count() == 3 * 2 + 1
    again = JobSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert [p for p, _ in spec.iter_domains()] == ["train.lr", "losses[1].gamma", "losses[2].alpha"]


def test_everything_but_dataset_and_losses_has_a_default_visible_in_the_schema():
    spec = JobSpec.model_validate({"dataset": {"name": "digits_lt"}, "losses": [{"name": "ce"}]})
    assert spec.model.name == "mlp" and spec.tune.metric == "balanced_accuracy" and spec.tune.control
    schema = JobSpec.model_json_schema()
    assert set(schema["required"]) == {"dataset", "losses"}
    assert schema["$defs"]["TrainSpec"]["properties"]["epochs"]["default"] == 30
    assert schema["$defs"]["FocalSpec"]["properties"]["gamma"]["default"] == 1.0


def test_missing_required_fields_are_named():
    assert {loc for loc, _ in errors({})} == {"dataset", "losses"}


@pytest.mark.parametrize(
    ("data", "loc", "msg"),
    [
        (with_(losses__1__gamma={"uniform": [-1, 2]}), "losses.1.focal.gamma", ">= 0"),
        (with_(losses__1__gamma={"uniform": [2, 1]}), "losses.1.focal.gamma", "lower bound"),
        (with_(train__lr={"loguniform": [0, 1]}), "train.lr", "lo > 0"),
        (with_(losses__2__alpha=-5), "losses.2.ib.alpha", "> 0"),
        (with_(losses__1__bogus=1), "losses.1.focal.bogus", "Extra inputs"),
        (with_(losses__0__gamma=1.0), "losses.0.ce.gamma", "Extra inputs"),
        (with_(losses__0__name="nope"), "losses.0", "does not match any of the expected tags"),
        (with_(dataset={"name": "mnist"}), "dataset", "does not match"),
        (with_(train__epochs=0), "train.epochs", "greater than or equal to 1"),
        (with_(train__optimizer="rmsprop"), "train.optimizer", "expected one of"),
        (with_(tune__metric="f2"), "tune.metric", "Input should be"),
        (with_(tune__num_samples=0), "tune.num_samples", "greater than or equal to 1"),
        (with_(losses__1__gamma={"randint": [1, 1]}), "losses.1.focal.gamma", "lower bound"),
        (with_(train__batch_size={"uniform": [16, 64]}), "train.batch_size", "integer field"),
        (with_(losses__2__start_epoch=30), "", "losses[2].start_epoch: 30 >= train.epochs 30"),
        (with_(scaling__gpus_per_worker=1), "scaling", "needs use_gpu"),
        (
            with_(scaling={"use_gpu": True, "gpus_per_worker": 0}),
            "scaling.gpus_per_worker",
            "use_gpu: true needs gpus_per_worker > 0",
        ),
        (
            with_(scaling={"num_workers": 2, "use_gpu": True, "gpus_per_worker": 0.5}),
            "scaling.gpus_per_worker",
            "needs gpus_per_worker 1, got 0.5",
        ),
        (
            with_(scaling={"num_workers": 4, "use_gpu": True, "gpus_per_worker": 2}),
            "scaling.gpus_per_worker",
            "(num_workers 4) needs gpus_per_worker 1, got 2",
        ),
        (with_(losses=[]), "losses", "at least 1"),
    ],
)
def test_each_bad_input_names_its_field(data, loc, msg):
    found = errors(data)
    assert any(loc_.startswith(loc) and msg in m for loc_, m in found), found


def test_grid_with_tpe_is_refused():
    data = with_(losses__1__gamma={"grid": [0.5, 2.0]}, tune__search="tpe")
    assert any("tune.search" in m and "tpe" in m for _, m in errors(data))


def test_grid_search_refuses_continuous_domains():
    assert any("continuous" in m for _, m in errors(with_(tune__search="grid")))


def test_trial_cap_and_epoch_cap_are_one_check_of_the_deployment_limits():
    spec = JobSpec.model_validate(EXAMPLE)  # a valid spec is valid without limits (stored, resumed, read back)

    def problems(**limits) -> list[str]:
        return [str(e) for e in Limits(**limits).violations(spec)]

    assert any("more than the limit of 5" in m for m in problems(max_trials=5))
    assert any("train.epochs: 30 exceeds the limit of 10" in m for m in problems(max_epochs=10))
    assert [e.loc for e in Limits(max_trials=5, max_epochs=10, max_workers_per_trial=1).violations(spec)] == [
        "train.epochs",
        "tune.num_samples",
    ]
    assert Limits(max_trials=7).check(spec).trial_count() == 7
    with pytest.raises(LimitExceeded, match="tune.num_samples: the job would run 7 trials"):
        Limits(max_trials=6).check(spec)


def test_grid_axes_multiply_trials_per_branch():
    data = with_(losses__1__gamma={"grid": [0.5, 1.0, 2.0]}, train__lr={"grid": [0.1, 0.2]})
    spec = JobSpec.model_validate(data)
    # ce: 2 lr x 2 samples; focal: 3 x 2 x 2; ib: 2 x 2; control 1
    assert [spec.trials_per_branch(i) for i in range(3)] == [4, 12, 4]
    assert spec.trial_count() == 21


def test_repeated_branches_need_labels():
    data = with_(losses=[{"name": "ce"}, {"name": "ce"}])
    assert any("label" in m for _, m in errors(data))
    ok = with_(losses=[{"name": "ce"}, {"name": "ce", "label": "ce-drw", "reweighting": {"scheme": "inverse"}}])
    assert [b.key for b in JobSpec.model_validate(ok).losses] == ["ce", "ce-drw"]


def test_rebalancing_start_takes_the_latest_drw_or_ib_start():
    data = with_(
        losses__2__start_epoch={"choice": [5, 12]},
        reweighting={"scheme": "effective_number", "start_epoch": 20},
    )
    assert JobSpec.model_validate(data).rebalancing_start() == 20
    assert JobSpec.model_validate(with_(losses__2__start_epoch={"choice": [5, 12]})).rebalancing_start() == 12


def test_resources_per_trial():
    spec = JobSpec.model_validate(with_(scaling={"num_workers": 2, "cpus_per_worker": 2, "use_gpu": True}))
    assert spec.trial_resources() == {"CPU": 4.01, "GPU": 2.0}
    assert spec.worker_resources() == {"CPU": 2.0, "GPU": 1.0}


def test_spec_paths_name_every_file_and_folder_with_its_kind():
    spec = JobSpec.model_validate(
        with_(
            dataset={"name": "file_list", "root": "inat", "train": "inat/train.txt", "test": "inat/val.txt"},
            model={"name": "resnet50", "weights_path": "weights/r50.safetensors"},
        )
    )
    assert spec.spec_paths() == [
        ("dataset.root", "inat", "dir"),
        ("dataset.train", "inat/train.txt", "file"),
        ("dataset.test", "inat/val.txt", "file"),
        ("model.weights_path", "weights/r50.safetensors", "file"),
    ]
    moved = spec.with_paths({"dataset.root": "/data/inat", "model.weights_path": "/data/w.safetensors"})
    assert moved.dataset.root == "/data/inat" and moved.model.weights_path == "/data/w.safetensors"
    folder = JobSpec.model_validate(with_(dataset={"name": "image_folder", "root": "pets", "val": "val"}))
    assert folder.spec_paths() == [("dataset.root", "pets", "dir")]
    table = JobSpec.model_validate(with_(dataset={"name": "tabular", "train": "t.parquet", "test": "t.csv"}))
    assert [loc for loc, _, _ in table.spec_paths()] == ["dataset.train", "dataset.test"]


@pytest.mark.parametrize(
    "section, value, loc, msg",
    [
        ("dataset", {"name": "image_folder", "root": "r", "train": "../x"}, "dataset.train", "without '..'"),
        ("dataset", {"name": "image_folder", "root": "r", "test": "/abs"}, "dataset.test", "relative to root"),
        ("dataset", {"name": "image_folder", "root": "r", "std": [0.2, 0.0, 0.2]}, "dataset.std", "positive"),
        ("dataset", {"name": "image_folder", "root": "r", "image_size": 16}, "dataset.image_size", "32"),
        ("dataset", {"name": "file_list", "root": "r", "train": "a.txt"}, "dataset.test", "Field required"),
        ("dataset", {"name": "tabular", "train": "a.csv", "test": "b.csv", "features": []}, "dataset.features", ""),
        ("model", {"name": "timm:convnext_tiny"}, "model.name", "optional extra 'timm'"),
        ("model", {"name": "timm:"}, "model.name", "pattern"),
        ("model", {"name": "vit_b"}, "model", "unknown model name"),
        ("train", {"precision": "fp8"}, "train.precision", "fp32"),
        ("train", {"loader_workers": -1}, "train.loader_workers", "greater than or equal to 0"),
    ],
)
def test_own_data_fields_are_checked_by_name(section, value, loc, msg):
    from pydantic import ValidationError

    from service.validation import validation_details

    data = with_(**{section: value})
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    details = validation_details(info.value, data)
    assert any(d["loc"] == loc and msg in d["msg"] for d in details), details


def test_dataset_paths_for_the_data_root_check():
    spec = JobSpec.model_validate(with_(dataset={"name": "npz", "path": "mine/data.npz"}))
    assert spec.dataset_paths() == {"path": "mine/data.npz"}
    assert spec.with_dataset_params(path="/abs/mine/data.npz").dataset.path == "/abs/mine/data.npz"
    assert JobSpec.model_validate(EXAMPLE).dataset_paths() == {}


def test_branch_models_match_the_loss_registry():
    from lt_core.losses import LOSSES

    assert set(BRANCH_MODELS) == set(LOSSES)
    for name, model in BRANCH_MODELS.items():
        spec_params = {k: f.default for k, f in model.model_fields.items() if k not in model.TRAINING_FIELDS}
        assert spec_params == LOSSES[name].defaults, name
        build_params = set(inspect.signature(LOSSES[name].build).parameters)
        assert set(spec_params) <= build_params, name


def test_dataset_and_model_specs_match_their_registries():
    from jobs.catalog import _union_members
    from jobs.spec import DatasetSpec, ModelSpec, registry_name
    from lt_core.datasets import DATASETS
    from lt_core.models import MODELS

    for registry, union in ((DATASETS, DatasetSpec), (MODELS, ModelSpec)):
        models = {registry_name(m): m for m in _union_members(union)}
        assert set(models) == set(registry)
        for name, model in models.items():
            fields = {k: f.get_default(call_default_factory=True) for k, f in model.model_fields.items() if k != "name"}
            if name == "timm":
                fields["arch"] = ""  # the spec's name "timm:<arch>" carries it
            assert set(fields) == set(registry[name].defaults), name
            for key, default in registry[name].defaults.items():
                value = fields[key]
                if key not in model.model_fields or model.model_fields[key].is_required():
                    continue  # required in the spec (e.g. npz's path), defaulted to None in the registry
                assert value == default or (isinstance(default, tuple) and list(default) == value), (name, key)


def test_domains_are_recognised_in_both_forms():
    spec = JobSpec.model_validate(EXAMPLE)
    assert is_domain(spec.train.lr) and is_domain({"choice": [1]}) and not is_domain(0.1)


@pytest.mark.parametrize(
    "scaling",
    [
        {"num_workers": 1, "use_gpu": True, "gpus_per_worker": 0.25},  # trials share a GPU
        {"num_workers": 1, "use_gpu": True, "gpus_per_worker": 2},
        {"num_workers": 2, "use_gpu": True},  # defaults to 1 GPU per worker
        {"num_workers": 2, "use_gpu": True, "gpus_per_worker": 1},
        {"num_workers": 2, "use_gpu": False, "gpus_per_worker": 0},
    ],
)
def test_gpu_scalings_that_can_run_are_accepted(scaling):
    spec = JobSpec.model_validate(with_(scaling=scaling))
    assert spec.scaling.gpus == scaling.get("gpus_per_worker", 1.0 if scaling["use_gpu"] else 0.0)
