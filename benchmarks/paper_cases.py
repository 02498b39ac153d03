"""The paper profile's network, crop and method per paper (params/paper/*), for the benchmarks.

Each case is (method, TrainConfig of its network, crop, augmentation). The data are
:class:`scribbleseg.data.synthetic.SyntheticVOC` items (VOC-sized, JPEG-decoded) through the paper's
RandomScaleCropFlip; weights are from scratch (no download), which does not change a step's cost.
"""
from __future__ import annotations

import dataclasses

from scribbleseg.baseline import PartialCE
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.cdsp.method import CDSP
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.data.synthetic import SyntheticVOC
from scribbleseg.data.voc import RandomScaleCropFlip
from scribbleseg.potts.method import PottsGD, SelfLabeling
from scribbleseg.train import TrainConfig
from scribbleseg.urss.method import URSS


@dataclasses.dataclass(frozen=True)
class Case:
    method: object
    cfg: TrainConfig
    crop: int
    scale: tuple[float, float] = (0.5, 2.0)
    pseudo: bool = False


DEEPLAB101 = TrainConfig(model="deeplabv2", backbone="resnet101", output_stride=8)
DEEPLAB50 = TrainConfig(model="deeplabv2", backbone="resnet50", output_stride=8)
UPERNET101 = TrainConfig(model="upernet", backbone="resnet101", output_stride=16)
V3PLUS_MOBILE = TrainConfig(model="deeplabv3plus", backbone="mobilenetv2", output_stride=16)

CASES = {
    "pCE (DeepLabV2 R101 OS8, 465)": Case(PartialCE(), DEEPLAB101, 465),
    "BLPSeg (UperNet R101, 384)": Case(BLPSeg(), UPERNET101, 384, (0.75, 1.25)),
    "URSS stage 1 (DeepLabV2 R50 OS8, 465)": Case(URSS(random_walk="paper", entropy="soft"), DEEPLAB50, 465),
    "URSS stage 2, eigenspace (DeepLabV2 R50 OS8, 465)": Case(
        URSS(random_walk="paper", entropy="soft", self_supervision="eigenspace", transform="random"), DEEPLAB50, 465),
    "CDSP (DeepLabV2 R50 OS8, 465)": Case(CDSP(pseudo=PseudoLabels("dir-synthetic")), DEEPLAB50, 465, pseudo=True),
    "Potts GD, dense (DeepLabV3+ MobileNetV2, 512)": Case(PottsGD(), V3PLUS_MOBILE, 512),
    "Potts soft self-labelling (DeepLabV3+ MobileNetV2, 512)": Case(SelfLabeling(), V3PLUS_MOBILE, 512),
}


def dataset(case: Case, n: int, seed: int = 0) -> SyntheticVOC:
    """``n`` synthetic VOC items through the case's training transform."""
    return SyntheticVOC(n, transform=RandomScaleCropFlip(case.crop, case.scale), with_pseudo=case.pseudo, seed=seed)


def case_config(case: Case, batch_size: int) -> TrainConfig:
    return dataclasses.replace(case.cfg, batch_size=batch_size, weights=None)
