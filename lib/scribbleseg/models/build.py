"""Build a segmentation model by name, with an explicit match over the supported architectures.

- "deeplabv2": :class:`~scribbleseg.models.deeplab.DeepLabV2` (URSS), logits at ``output_stride``;
- "deeplabv3plus": :class:`~scribbleseg.models.deeplab.DeepLabV3Plus` (CDSP, Potts / soft self-labeling), stride 4;
- "upernet": :class:`~scribbleseg.models.upernet.UperNet` (BLPSeg), stride 4;
- "small": a small CPU model for tests and notebooks (``backbone``, ``output_stride`` and
  ``weights`` are ignored).
"""
from __future__ import annotations

from scribbleseg.models.base import SegmentationModel
from scribbleseg.models.deeplab import DeepLabV2, DeepLabV3Plus
from scribbleseg.models.small import SmallSegNet
from scribbleseg.models.upernet import UperNet

MODEL_NAMES = ("deeplabv2", "deeplabv3plus", "upernet", "small")


def build_model(
    name: str,
    num_classes: int,
    backbone: str = "resnet50",
    output_stride: int = 16,
    weights: str | None = None,
    width: int = 16,
) -> SegmentationModel:
    """Build model ``name`` for ``num_classes`` classes.

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: K, the number of output channels of the logits.
        backbone: "resnet18", "resnet34", "resnet50", "resnet101" or "mobilenetv2".
        output_stride: backbone output stride, 8, 16 or 32.
        weights: None (from scratch) or "imagenet" (backbone only; see
            :func:`~scribbleseg.models.backbones.imagenet_state_dict`).
        width: channel base of the "small" CPU model (its other arguments do not apply).

    Returns:
        A :class:`SegmentationModel` mapping (N, 3, H, W) to ``{"features", "logits"}``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names), backbone or stride.
    """
    match name:
        case "deeplabv2":
            return DeepLabV2(num_classes, backbone, output_stride, weights)
        case "deeplabv3plus":
            return DeepLabV3Plus(num_classes, backbone, output_stride, weights)
        case "upernet":
            return UperNet(num_classes, backbone, output_stride, weights)
        case "small":
            return SmallSegNet(num_classes, width)
        case _:
            raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
