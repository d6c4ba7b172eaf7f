"""The engine's GPU/DDP contracts, checked on one CPU: equal shards, agreed NaN stops, loaders, flags, CUDA RNG."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from lt_core import engine
from lt_core.datasets import ArrayDataset
from lt_core.engine import (
    CUDA_LOADER_WORKERS,
    EpochShardSampler,
    NonFiniteLossError,
    configure_device,
    load_checkpoint,
    loader_options,
    save_checkpoint,
    train_one_epoch,
)
from lt_core.losses import create_loss


@pytest.mark.parametrize("world_size", range(1, 9))
def test_sampler_gives_every_rank_the_same_length_and_covers_everything(world_size: int) -> None:
    for n in range(1, 21):
        shards = [list(EpochShardSampler(n, rank=r, world_size=world_size, seed=3)) for r in range(world_size)]
        lengths = {len(shard) for shard in shards}
        assert lengths == {math.ceil(n / world_size)}, (n, world_size, [len(s) for s in shards])
        assert all(len(EpochShardSampler(n, rank=r, world_size=world_size)) == len(s) for r, s in enumerate(shards))
        flat = [i for shard in shards for i in shard]
        assert set(flat) == set(range(n)) and all(0 <= i < n for i in flat)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.fc(x), x


class _NaNAt(nn.Module):
    """Cross-entropy that turns NaN from call ``at`` on (a diverging run on this worker)."""

    def __init__(self, at: int | None) -> None:
        super().__init__()
        self.at, self.calls, self.ce = at, 0, create_loss("ce")

    def forward(self, logits: Tensor, target: Tensor, *, features: Tensor | None = None) -> Tensor:
        loss = self.ce(logits, target)
        self.calls += 1
        return loss * float("nan") if self.at is not None and self.calls > self.at else loss


def _epoch(criterion: nn.Module, *, steps: int = 10, check_every: int = 4, reduce=None) -> dict[str, float]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps * 2, 3), torch.randint(0, 2, (steps * 2,)))
    model = _Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(data, batch_size=2)
    return train_one_epoch(model, loader, criterion, opt, epoch=2, reduce=reduce, check_every=check_every)


def test_nan_on_this_worker_is_named_by_its_first_step_at_the_next_check() -> None:
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 3 step 5") as err:
        _epoch(_NaNAt(5))
    assert (err.value.epoch, err.value.step) == (3, 5)


def test_every_check_reduces_the_flags_so_a_nan_on_another_worker_stops_this_one_too() -> None:
    calls: list[tuple[torch.device, tuple[int, ...]]] = []

    def reduce(tensors: list[Tensor]) -> None:  # the all-reduce, with another worker whose loss was inf at step 6
        (flags,) = tensors
        calls.append((flags.device, tuple(flags.shape)))
        if len(calls) == 2:  # the window of steps 4..7
            flags[6 - 4, 0] += 1.0

    with pytest.raises(NonFiniteLossError, match="loss became inf at epoch 3 step 6"):
        _epoch(_NaNAt(None), reduce=reduce)
    assert calls == [(torch.device("cpu"), (4, 2))] * 2

    calls.clear()
    stats = _epoch(_NaNAt(None), reduce=lambda tensors: calls.append((tensors[0].device, tuple(tensors[0].shape))))
    # 10 steps, a check every 4: after steps 3 and 7, then the last (partial) window; the same count on every worker
    assert len(calls) == 3 and stats["samples"] == 20 and math.isfinite(stats["train_loss"])


def test_train_loss_is_the_mean_per_sample() -> None:
    ce = create_loss("ce")
    torch.manual_seed(0)
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    model = _Model()
    expected = ce(model(x)[0], y).item()  # before any step: compare on one batch with lr 0
    stats = train_one_epoch(
        model, DataLoader(TensorDataset(x, y), batch_size=6), ce, torch.optim.SGD(model.parameters(), lr=0.0), epoch=0
    )
    assert stats["train_loss"] == pytest.approx(expected, rel=1e-6) and stats["samples"] == 6


def test_check_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="check_every must be >= 1, got 0"):
        _epoch(_NaNAt(None), check_every=0)


def test_loader_options_by_device_and_dataset(monkeypatch) -> None:
    plain = ArrayDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64))
    augmented = Subset(ArrayDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64), transform=lambda x: x), [0])
    assert loader_options(plain, "cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_options(augmented, "cpu") == {"num_workers": 0, "pin_memory": False}  # workers would take cores
    assert loader_options(plain, "cuda") == {"num_workers": 0, "pin_memory": True}
    cpus = min(len(os.sched_getaffinity(0)), torch.get_num_threads())
    workers = min(CUDA_LOADER_WORKERS, cpus - 1)
    expected = {"num_workers": workers, "pin_memory": True}
    if workers:
        expected |= {"persistent_workers": True, "prefetch_factor": 4}
    assert loader_options(augmented, "cuda") == expected
    assert loader_options(plain, "cuda", num_workers=2)["persistent_workers"] is True
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)  # e.g. a Ray worker with cpus_per_worker 16
    monkeypatch.setattr(engine, "_usable_cpus", lambda: 64)
    assert loader_options(augmented, "cuda")["num_workers"] == CUDA_LOADER_WORKERS
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one CPU: augmentation stays in the main process
    assert loader_options(augmented, "cuda") == {"num_workers": 0, "pin_memory": True}
    with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
        loader_options(plain, "cpu", num_workers=-1)


@pytest.fixture
def restore_backend_flags():
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1:]


def test_configure_device_sets_the_speed_flags_on_cuda_only(restore_backend_flags) -> None:
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.benchmark = False
    configure_device("cpu")
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.benchmark is False
    configure_device("cuda")  # only flags: needs no GPU
    assert torch.get_float32_matmul_precision() == "high"
    assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32 and not torch.backends.cudnn.deterministic
    configure_device(torch.device("cuda", 0), deterministic=True)
    assert torch.get_float32_matmul_precision() == "highest"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.allow_tf32


def test_checkpoint_carries_the_cuda_rng_state(tmp_path, monkeypatch) -> None:
    # no GPU here: torch.cuda's RNG functions are replaced by a fake of one device holding one state
    cuda_states = [torch.arange(16, dtype=torch.uint8)]
    restored: list[tuple[int, Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in cuda_states])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    model = _Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "c.pt", model, opt, 1, [])
    cuda_states[0] = torch.zeros(16, dtype=torch.uint8)  # the generator moves on
    load_checkpoint(path, model, opt)
    assert len(restored) == 1 and restored[0][0] == 0
    assert torch.equal(restored[0][1], torch.arange(16, dtype=torch.uint8))


def _worker(rank: int, store_path: str, result_path: str) -> None:
    """One of two gloo ranks: rank 1's loss turns NaN after 5 steps; both must raise the same error, no deadlock."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:

        def reduce(tensors: list[Tensor]) -> None:
            for t in tensors:
                dist.all_reduce(t)

        try:
            _epoch(_NaNAt(5 if rank == 1 else None), reduce=reduce)
            outcome = "finished"
        except NonFiniteLossError as error:
            outcome = str(error)
        with open(result_path, "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def test_two_ranks_stop_together_with_the_same_error(tmp_path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    results = [tmp_path / f"rank{r}.txt" for r in range(2)]
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "store"), str(results[r]))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)  # bounded: a rank left waiting in a collective would hang here
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"ranks {alive} did not finish: a deadlock"
    outcomes = [r.read_text() for r in results]
    assert outcomes == ["loss became nan at epoch 3 step 5; lower the learning rate or check the data"] * 2
