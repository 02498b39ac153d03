"""Losses: pure functions of tensors (see each module's docstring for the paper and equation)."""
from scribbleseg.losses.pce import partial_cross_entropy

__all__ = ["partial_cross_entropy"]
