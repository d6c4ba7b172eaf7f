"""Trials on your own data: image folders decoded in loader workers, bf16, per-rank file shards (real local Ray)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.plan import plan_trials
from jobs.spec import JobSpec
from jobs.train import TrialContext, run_trial
from lt_core.datasets import DatasetError, load_dataset
from lt_core.engine import loader_options, shard_indices, train_shard

TRAIN = {"ant": 5, "bee": 3, "cat": 2}


def image_folder(root: Path, test_per_class: int = 2) -> dict:  # 2: one each for validation and test
    rng = np.random.default_rng(0)
    for split, counts in (("train", TRAIN), ("test", dict.fromkeys(TRAIN, test_per_class))):
        for c, n in counts.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    return {"name": "image_folder", "root": str(root), "image_size": 32}


def trial_for(dataset: dict, **train) -> dict:
    spec = JobSpec.model_validate(
        {
            "dataset": dataset,
            "model": {"name": "resnet18"},
            "losses": [{"name": "logit_adjusted"}],
            "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, **train},
            "tune": {"control": False},
        }
    )
    return plan_trials(spec)[0]


def test_bf16_image_trial_decodes_in_loader_workers_and_reports_finite_metrics(tmp_path: Path):
    dataset = image_folder(tmp_path / "imgs")
    trial = trial_for(dataset, precision="bf16", loader_workers=1)
    assert trial.train.precision == "bf16" and trial.train.loader_workers == 1
    reports = []
    history = run_trial(trial, dataset, TrialContext(report=lambda m, ckpt: reports.append(m)))
    assert len(history) == 1 and len(reports) == 1
    for key in ("train_loss", "accuracy", "balanced_accuracy", "nll", "ece"):
        assert math.isfinite(history[0][key]), key


def test_a_missing_or_unreadable_image_fails_the_trial_naming_the_path(tmp_path: Path):
    from jobs.train import cached_dataset

    dataset = image_folder(tmp_path / "imgs")
    trial = trial_for(dataset, loader_workers=1)
    trial = trial.model_copy(update={"model": "mlp", "model_params": {"hidden_sizes": [8]}})
    cached_dataset(dataset)  # listed while the file exists (the trial reuses this listing)
    image = tmp_path / "imgs" / "train" / "bee" / "1.jpg"
    image.unlink()
    with pytest.raises(DatasetError, match=rf"{image}: image file not found"):
        run_trial(trial, dataset, TrialContext())
    image.write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"{image}: cannot read image"):
        run_trial(trial, dataset, TrialContext())


def test_lazy_data_gets_loader_workers_and_fixed_per_rank_shards(tmp_path: Path):
    data = load_dataset("image_folder", **{k: v for k, v in image_folder(tmp_path / "i").items() if k != "name"})
    assert loader_options(data.train, "cpu", num_workers=None)["num_workers"] >= 1
    assert loader_options(data.train, "cpu", num_workers=0)["num_workers"] == 0
    shards = [train_shard(data, rank, 3, seed=0) for rank in range(3)]
    assert [len(s.indices) for s, _ in shards] == [4, 3, 3]
    for rank, (subset, sampler) in enumerate(shards):
        assert subset.indices == shard_indices(10, rank, 3)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            order = list(sampler)
            assert len(order) == len(sampler) == 4  # the longest shard: equal steps on every rank
            assert set(order) == set(range(len(subset)))  # every file of the shard, only those
    in_memory = load_dataset("digits_lt")
    whole, _ = train_shard(in_memory, 0, 2, seed=0)
    assert whole is in_memory.train  # in-memory data keeps the per-epoch shuffle across workers


def _counting_loop(config):
    """A Ray Train worker running the real trial while counting the image files it decodes."""
    import ray.train
    import ray.train.torch

    from jobs.train import cached_dataset, global_class_counts
    from lt_core.datasets import images

    opened: list[str] = []
    real = images.decode_image

    def counting(path: str, size: int):
        opened.append(path)
        return real(path, size)

    images.decode_image = counting  # loader_workers 0: decoding happens in this process
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    ctx = TrialContext(rank=rank, world_size=world, prepare_model=ray.train.torch.prepare_model)
    run_trial(config["trial"], config["dataset"], ctx)
    data = cached_dataset(config["dataset"])
    train_paths = {data.train.path(i) for i in range(len(data.train))}
    out = {
        "opened_train": sorted(p for p in opened if p in train_paths),
        "shard": sorted(data.train.path(i) for i in shard_indices(len(data.train), rank, world)),
        "counts": global_class_counts(data, rank, world).tolist(),
        "label_counts": torch.bincount(data.train_targets, minlength=data.num_classes).tolist(),
    }
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(out))


@pytest.mark.ray
def test_two_ddp_ranks_open_only_their_shard_and_all_reduce_the_counts(ray_session, tmp_path: Path):
    import sys

    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    dataset = image_folder(tmp_path / "imgs")
    dataset["augment"] = False
    trial = trial_for(dataset, loader_workers=0, epochs=2)
    # the data path is under test here
    trial = trial.model_copy(update={"model": "mlp", "model_params": {"hidden_sizes": [16]}})
    trainer = TorchTrainer(
        _counting_loop,
        train_loop_config={"trial": trial, "dataset": dataset, "out": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.99}),
        run_config=ray.train.RunConfig(name="shards", storage_path=str(tmp_path / "ray")),
    )
    result = trainer.fit()
    assert result.error is None
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for out in ranks:
        # opened: each file of its shard (every epoch), no other training file
        assert sorted(set(out["opened_train"])) == out["shard"] and len(out["shard"]) == 5
        assert len(out["opened_train"]) == 2 * 5  # two epochs, each shard file once per epoch
        assert out["counts"] == out["label_counts"] == [5, 3, 2]
    assert not set(ranks[0]["shard"]) & set(ranks[1]["shard"])


def test_fp16_trial_checkpoints_and_restores_the_loss_scale(tmp_path: Path, monkeypatch):
    import shutil

    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits_lt"},
            "model": {"name": "mlp", "hidden_sizes": [16]},
            "losses": [{"name": "ce"}],
            "train": {"epochs": 2, "batch_size": 64, "precision": "fp16"},
            "tune": {"control": False},
        }
    )
    trial = plan_trials(spec)[0]
    saved = []

    def keep_first(metrics, ckpt):
        if ckpt is not None and not saved:  # the checkpoint after epoch 1
            shutil.copytree(ckpt, tmp_path / "ckpt")
            saved.append(torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=False)["extra"])

    history = run_trial(trial, {"name": "digits_lt"}, TrialContext(report=keep_first))
    assert all(math.isfinite(h["train_loss"]) for h in history)
    scale = saved[0]["grad_scaler"]["scale"]
    assert scale > 0
    restored = []
    real = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(
        torch.amp.GradScaler,
        "load_state_dict",
        lambda self, state: (restored.append(state["scale"]), real(self, state)),
    )
    resumed = run_trial(trial, {"name": "digits_lt"}, TrialContext(resume_dir=str(tmp_path / "ckpt")))
    assert restored == [scale]
    assert len(resumed) == 2 and resumed[0] == history[0] and math.isfinite(resumed[1]["train_loss"])
