"""A trial's collectives run on the trial's device (NCCL takes no CPU tensors), checked on the CPU.

Two stand-ins for a GPU: a spy on ``torch.distributed.all_reduce`` that records the device of each tensor while the
trial's device is ``meta`` (a device that is not the CPU), and a real single-process gloo group registered for the
``cuda`` device type only, which refuses CPU tensors the way NCCL does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from jobs.plan import TrialConfig
from jobs.train import TrialContext, _all_reduce, global_class_counts, run_trial
from lt_core.datasets import load_dataset
from lt_core.engine import EpochShardSampler, FitConfig, LossSchedule, build_optimizer, run_epoch
from lt_core.models import create_model

DIGITS = {"name": "digits_lt", "imbalance_factor": 20, "profile": "exp", "test_per_class": 50, "seed": 0}
TRIAL = TrialConfig.model_validate(
    {
        "model": "mlp",
        "model_params": {"hidden_sizes": [16]},
        "loss": "ce",
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.1},
    }
)


@pytest.fixture
def spy(monkeypatch) -> Iterator[list[torch.device]]:
    """A real one-rank gloo group, whose ``all_reduce`` records each tensor's device and leaves it unchanged."""
    devices: list[torch.device] = []
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: devices.append(tensor.device))
    yield devices
    dist.destroy_process_group()


def test_the_trial_all_reduces_its_class_counts_on_its_device(spy) -> None:
    # meta tensors have no data, so copying the sum back fails right after the collective: what counts is where it ran
    with pytest.raises(NotImplementedError, match="meta"):
        run_trial(TRIAL, DIGITS, TrialContext(rank=0, world_size=2, device="meta"))
    assert spy == [torch.device("meta")]


def test_global_class_counts_and_all_reduce_move_cpu_tensors_to_the_device(spy) -> None:
    data = load_dataset("digits_lt", imbalance_factor=20, test_per_class=50, seed=0)
    with pytest.raises(NotImplementedError, match="meta"):
        global_class_counts(data, 0, 2, "meta")
    assert spy == [torch.device("meta")]
    spy.clear()
    _all_reduce([torch.zeros(2, device="meta"), torch.zeros(3, device="meta")], 2, "meta")  # on the device: no copy
    assert spy == [torch.device("meta")] * 2
    spy.clear()
    _all_reduce([torch.zeros(2)], 1, "meta")  # one worker: no collective at all
    assert spy == []


def test_an_epoch_reduces_only_device_tensors(spy) -> None:
    # the first collective of an epoch is the agreed NaN check of the training loss, on the device
    data = load_dataset("digits_lt", imbalance_factor=20, test_per_class=50, seed=0)
    cfg = FitConfig(model_params={"hidden_sizes": [16]}, epochs=1, batch_size=64)
    model = create_model("mlp", 10, (64,), hidden_sizes=[16]).to("meta")
    sampler = EpochShardSampler(len(data.train))
    loader = torch.utils.data.DataLoader(data.train, batch_size=64, sampler=sampler)
    schedule = LossSchedule(cfg, data.class_counts, "meta")

    with pytest.raises(NotImplementedError, match="meta"):
        run_epoch(
            model,
            build_optimizer(model, cfg),
            cfg,
            schedule,
            sampler,
            loader,
            loader,
            data.class_counts,
            0,
            device="meta",
            reduce=lambda tensors: _all_reduce(tensors, 2, "meta"),
        )
    assert spy and all(d == torch.device("meta") for d in spy)


@pytest.fixture
def cuda_only_group():
    """A real process group of one rank whose backend serves the cuda device type only (like NCCL)."""
    dist.init_process_group("cuda:gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_cuda_only_group_refuses_the_cpu_tensors_the_trial_used_to_reduce(cuda_only_group) -> None:
    # the crash of issue 17, reproduced on the CPU: every GPU trial with 2+ workers all-reduced a CPU int64 tensor
    with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
        dist.all_reduce(torch.zeros(3, dtype=torch.long))


def test_all_reduce_sums_in_a_real_gloo_group() -> None:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        data = load_dataset("digits_lt", imbalance_factor=20, test_per_class=50, seed=0)
        # world_size 1 in the group: the sum is this worker's own shard (rank 0 of 2)
        shard = torch.bincount(data.train_targets[0::2], minlength=10)
        assert torch.equal(global_class_counts(data, 0, 2, "cpu"), shard)
    finally:
        dist.destroy_process_group()
