"""Mixed precision: every loss is computed in float32 under autocast, and bf16/fp16 runs train to finite metrics."""

from __future__ import annotations

import pytest
import torch

from lt_core.datasets import load_dataset
from lt_core.engine import FitConfig, autocast, fit, make_grad_scaler
from lt_core.losses import LOSSES, create_loss

COUNTS = torch.tensor([400, 120, 30, 6])


def build(name: str) -> torch.nn.Module:
    info = LOSSES[name]
    return create_loss(name, class_counts=COUNTS if info.needs_class_counts else None)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_compute_in_float32_on_half_precision_logits_under_autocast(name: str, dtype: torch.dtype):
    torch.manual_seed(0)
    # Large logits (fp16: exp overflows past 11; bf16: 8 significant bits) and close ones (differences bf16 rounds).
    logits = torch.cat([torch.randn(6, 4) * 40, 7.0 + torch.randn(6, 4) * 1e-2]).to(dtype).requires_grad_()
    features = (torch.rand(12, 8) * 3).to(dtype)
    target = torch.tensor([0, 1, 2, 3] * 3)
    loss_fn = build(name)
    torch.manual_seed(1)  # SEQL draws random masks: the same draws for both calls
    with autocast("cpu", "bf16" if dtype == torch.bfloat16 else "fp16"):
        loss = loss_fn(logits, target, features=features if LOSSES[name].needs_features else None)
    # the float32 loss of the very same (rounded) values
    torch.manual_seed(1)
    reference = loss_fn(
        logits.detach().float(), target, features=features.float() if LOSSES[name].needs_features else None
    )
    # computed in float32, rounded once to the logits' dtype (a half-precision computation would be far off)
    assert loss.dtype == dtype and torch.isfinite(loss)
    torch.testing.assert_close(loss, reference.to(dtype), rtol=0, atol=0)
    loss.backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()


def test_grad_scaler_only_for_fp16():
    assert make_grad_scaler("fp32", "cpu") is None and make_grad_scaler("bf16", "cpu") is None
    assert isinstance(make_grad_scaler("fp16", "cpu"), torch.amp.GradScaler)
    with pytest.raises(ValueError, match="precision must be one of"):
        FitConfig(precision="fp8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_fit_reports_finite_metrics_close_to_fp32(precision: str):
    data = load_dataset("digits_lt", imbalance_factor=10)

    def run(precision: str) -> list[dict]:
        cfg = FitConfig(
            model="mlp",
            model_params={"hidden_sizes": [32]},
            loss="ce",
            epochs=2,
            batch_size=64,
            lr=0.05,
            precision=precision,
            reweighting="inverse",
        )
        return fit(cfg, data)

    history, reference = run(precision), run("fp32")
    assert len(history) == 2
    for h in history:
        assert all(torch.isfinite(torch.tensor(float(h[k]))) for k in ("train_loss", "accuracy", "nll", "ece"))
    assert abs(history[-1]["train_loss"] - reference[-1]["train_loss"]) < 0.02 * reference[-1]["train_loss"]
