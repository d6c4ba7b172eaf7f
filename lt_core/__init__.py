"""Pure-PyTorch core of the long-tail service: datasets, models, losses, metrics and the training engine."""
