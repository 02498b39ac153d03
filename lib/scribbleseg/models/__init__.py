"""Segmentation models. See :mod:`scribbleseg.models.base` for the interface."""
from scribbleseg.models.base import SegmentationModel, upsample

__all__ = ["SegmentationModel", "upsample"]
