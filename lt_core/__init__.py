"""Pure-PyTorch core of the long-tail service: datasets, models, losses, metrics and the training engine."""

from lt_core.inference import load_model, predict

__all__ = ["load_model", "predict"]
