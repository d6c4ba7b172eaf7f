"""``fit`` with ``FitHooks``: the one epoch loop, as one worker of a 2-rank DDP run and resumed from a checkpoint."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from torch import Tensor

from lt_core.datasets import load_dataset, with_validation
from lt_core.engine import EpochEnd, FitConfig, FitHooks, fit, load_checkpoint
from lt_core.models import create_model

DIGITS = {"imbalance_factor": 10, "test_per_class": 30, "seed": 0}


def _cfg(**kw) -> FitConfig:
    return FitConfig(**({"model_params": {"hidden_sizes": [16]}, "epochs": 2, "batch_size": 32, "lr": 0.05} | kw))


def _ddp_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks running ``fit`` with DDP, an all-reduce and a report hook; writes what it saw."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        data = with_validation(load_dataset("digits_lt", **DIGITS), 0.5, seed=0)
        reports: list[tuple[int, bool]] = []
        wrapped: list[str] = []

        def prepare(model: torch.nn.Module) -> torch.nn.Module:
            ddp = DistributedDataParallel(model)
            wrapped.append(type(ddp).__name__)
            return ddp

        def reduce(tensors: list[Tensor]) -> None:
            for t in tensors:
                dist.all_reduce(t)

        def report(end: EpochEnd) -> None:
            reports.append((end.epoch, end.last))
            end.save(Path(out) / f"rank{rank}.pt", {"rank": rank})  # one file per rank, to compare the weights

        history = fit(
            _cfg(epochs=3),
            data,
            hooks=FitHooks(rank=rank, world_size=2, prepare_model=prepare, reduce=reduce, report=report),
        )
        torch.save({"reports": reports, "wrapped": wrapped, "history": history}, Path(out) / f"seen{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_train_through_fit_with_hooks_and_end_with_identical_weights(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_ddp_rank, args=(r, str(tmp_path / "store"), str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)  # bounded: a rank left waiting in a collective would hang here
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, f"ranks {alive} did not finish: a deadlock"
    assert [p.exitcode for p in procs] == [0, 0]
    seen = [torch.load(tmp_path / f"seen{r}.pt", weights_only=False) for r in range(2)]
    for s in seen:
        assert s["wrapped"] == ["DistributedDataParallel"]  # prepare_model ran once on every rank
        assert s["reports"] == [(1, False), (2, False), (3, True)]  # the report hook ran on every rank, every epoch
    # every reduced figure is the same on both ranks (each evaluated its own test and validation shard)
    timing = {"epoch_time_s", "reported_at"}
    rows = [[{k: v for k, v in h.items() if k not in timing} for h in s["history"]] for s in seen]
    assert rows[0] == rows[1] and "val_accuracy" in rows[0][-1]
    assert rows[0][-1]["train_loss"] < rows[0][0]["train_loss"]  # it learns
    states = []
    for rank in range(2):
        model = create_model("mlp", 10, (64,), hidden_sizes=[16])
        state = load_checkpoint(tmp_path / f"rank{rank}.pt", model)  # saves the unwrapped module
        assert state["epoch"] == 3 and state["extra"]["rank"] == rank and state["extra"]["config"]["epochs"] == 3
        states.append(model.state_dict())
    # DDP broadcast rank 0's initial weights and averaged the gradients of the two shards: one model on both ranks
    # (without the wrap each rank would step on its own shard's gradients and the weights would differ)
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_through_fit_with_hooks_continues_where_it_stopped(tmp_path: Path, monkeypatch, precision) -> None:
    data = load_dataset("digits_lt", **DIGITS)
    cfg = _cfg(epochs=4, precision=precision, model_params={"hidden_sizes": [16], "dropout": 0.2}, seed=5)

    def run(path: Path, **kw) -> tuple[list[dict], list[int], list[list[dict]]]:
        reported, started = [], []

        def report(end: EpochEnd) -> None:
            reported.append(end.epoch)
            end.save(path, {})

        history = fit(cfg, data, hooks=FitHooks(start=started.append, report=report), **kw)
        return history, reported, started

    keys = ("epoch", "train_loss", "lr", "accuracy", "balanced_accuracy", "nll")

    def figures(history: list[dict]) -> list[list[float]]:  # the history without its timings
        return [[h[k] for k in keys] for h in history]

    full, reported, started = run(tmp_path / "full.pt")
    assert reported == [1, 2, 3, 4] and started == [[]]
    part, reported, started = run(tmp_path / "part.pt", stop_after=2)
    assert reported == [1, 2] and figures(part) == figures(full[:2])

    restored: list[float] = []
    real = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(
        torch.amp.GradScaler, "load_state_dict", lambda self, s: (restored.append(s["scale"]), real(self, s))
    )
    resumed, reported, started = run(tmp_path / "part.pt", resume_from=tmp_path / "part.pt")
    assert reported == [3, 4]  # only the epochs it had not run
    assert started == [part]  # the start hook got the checkpoint's history
    assert resumed[:2] == part  # carried over from the checkpoint as they were
    assert restored == ([] if precision == "fp32" else [65536.0])  # the fp16 loss scale came back from the checkpoint
    assert figures(resumed) == figures(full)  # epochs 3 and 4 continue exactly where the run stopped
    a = torch.load(tmp_path / "full.pt", weights_only=False)
    b = torch.load(tmp_path / "part.pt", weights_only=False)
    assert b["epoch"] == 4 and ("grad_scaler" in b["extra"]) == (precision == "fp16")
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=0)


def test_hooks_refuse_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        FitHooks(rank=2, world_size=2)
