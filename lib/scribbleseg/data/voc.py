"""PASCAL VOC 2012 + SBD + ScribbleSup (the papers' benchmark), loaded per item.

Expected layout under ``root`` (what :func:`check_voc` validates)::

    root/
    ├── VOC2012/                          VOCdevkit/VOC2012 from "VOCtrainval_11-May-2012.tar"
    │   ├── JPEGImages/<id>.jpg
    │   ├── SegmentationClass/<id>.png    palette PNGs, 255 = void (train / val masks)
    │   ├── SegmentationClassAug/<id>.png SBD masks as PNGs (needed only for split "trainaug")
    │   └── ImageSets/Segmentation/
    │       ├── train.txt, val.txt        from the devkit
    │       └── trainaug.txt              10,582 ids, ships with SegmentationClassAug
    └── scribble_annotation/
        └── pascal_2012/<id>.xml          ScribbleSup's scribbles (see scribbleseg.data.strokes)

Images differ in size, so items are read one at a time (unlike :mod:`scribbleseg.data.folder`);
:class:`RandomScaleCropFlip` makes them a fixed size for batching. Command line::

    python -m scribbleseg.data.voc rasterize XML_DIR OUT_DIR --width 3
    python -m scribbleseg.data.voc check ROOT --split trainaug
"""
from __future__ import annotations

import argparse
import dataclasses
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scribbleseg.constants import IGNORE_INDEX, VOC_CLASSES
from scribbleseg.data.folder import ScribbleVariant, apply_variant, diffuse_labels
from scribbleseg.data.io import check_same_size, read_ids, read_image, read_label, write_label
from scribbleseg.data.strokes import Stroke, rasterize, read_xml
from scribbleseg.data.voc_check import validate

DEVKIT = ('the VOC2012 devkit "VOCtrainval_11-May-2012.tar" (host.robots.ox.ac.uk/pascal/VOC/voc2012/); '
          "extract it and move its VOCdevkit/VOC2012 folder to {voc}")
SBD = ("SBD's SegmentationClassAug (SBD masks converted to PNG, usually SegmentationClassAug.zip with "
       "trainaug.txt); put the PNGs in {aug} and trainaug.txt in {splits}")
SCRIBBLESUP = ("ScribbleSup's \"pascal_2012\" scribble annotations (jifengdai.org/downloads/scribble_sup/); "
               "extract so that the <id>.xml files lie in {scribbles}")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class VOCPaths:
    """Folders of the layout in the module docstring (not checked; see :func:`check_voc`)."""

    root: Path
    voc: Path
    images: Path
    masks: Path
    masks_aug: Path
    splits: Path
    scribbles: Path

    @classmethod
    def from_root(cls, root: Path) -> "VOCPaths":
        voc = Path(root) / "VOC2012"
        return cls(Path(root), voc, voc / "JPEGImages", voc / "SegmentationClass", voc / "SegmentationClassAug",
                   voc / "ImageSets" / "Segmentation", Path(root) / "scribble_annotation" / "pascal_2012")

    def mask_dir(self, split: str) -> Path:
        """SegmentationClassAug for "trainaug", SegmentationClass otherwise."""
        return self.masks_aug if split == "trainaug" else self.masks


def check_voc(root: Path, split: str, need_scribbles: bool = True) -> VOCPaths:
    """Check that ``root`` holds what ``split`` needs, and return its paths.

    Raises:
        FileNotFoundError: one error listing every missing folder / file, what to download and where
            to put it.
    """
    p = VOCPaths.from_root(root)
    fmt = dict(voc=p.voc, aug=p.masks_aug, splits=p.splits, scribbles=p.scribbles)
    need = [(p.images, DEVKIT), (p.masks, DEVKIT)]
    if split == "trainaug":
        need.append((p.masks_aug, SBD))
    hint = {"train": DEVKIT, "val": DEVKIT, "trainaug": SBD}.get(split, "your own list of ids, one per line")
    need.append((p.splits / f"{split}.txt", hint))
    missing = [f"  - {path}: download {what.format(**fmt)}" for path, what in need if not path.exists()]
    if need_scribbles and not (p.scribbles.is_dir() and any(p.scribbles.glob("*.xml"))):
        missing.append(f"  - {p.scribbles}/*.xml: download {SCRIBBLESUP.format(**fmt)}")
    if missing:
        tips = []
        if (p.root / "JPEGImages").is_dir():
            tips.append(f"{p.root} looks like the VOC2012 folder itself; pass its parent as root")
        if (p.root / "VOCdevkit" / "VOC2012").is_dir():
            tips.append(f"move {p.root / 'VOCdevkit' / 'VOC2012'} to {p.voc}")
        raise FileNotFoundError(f"PASCAL VOC data for split {split!r} is incomplete under {p.root}; missing:\n"
                                + "\n".join(missing + [f"  tip: {t}" for t in tips])
                                + "\nSee the layout in scribbleseg.data.voc's docstring.")
    return p


def rasterize_scribblesup(xml_dir: Path, out_dir: Path, width: int = 3,
                          class_names: tuple[str, ...] = VOC_CLASSES) -> list[Path]:
    """Rasterise every ``xml_dir/*.xml`` to ``out_dir/<id>.png`` (palette PNG, 255 = unlabelled).

    Returns the written paths. Raises FileNotFoundError when there is no XML, ValueError naming the
    file for a malformed XML or an unknown class tag.
    """
    files = sorted(Path(xml_dir).glob("*.xml"))
    if not files:
        raise FileNotFoundError(f"no *.xml files in {xml_dir}; expected ScribbleSup's pascal_2012 folder")
    out = []
    for f in files:
        strokes, size = read_xml(f, class_names)
        out.append(Path(out_dir) / f"{f.stem}.png")
        write_label(out[-1], rasterize(strokes, size, width))
    return out


class VOCScribbleDataset(Dataset):
    """VOC images with masks and ScribbleSup scribbles, read per item.

    Args:
        root: folder laid out as in the module docstring (checked by :func:`check_voc`).
        split: "trainaug", "train", "val" or another ImageSets/Segmentation list.
        variant: stroke width and URSS drop / shrink. ``variant.clip`` is ignored: real scribbles are
            never clipped to the masks. Drop draws are seeded by (variant.seed, id): fixed per item.
        transform: optional callable on the item dict (e.g. :class:`RandomScaleCropFlip`).
        with_scribbles: read the XMLs (off for evaluation, e.g. val).
        pseudo_dir: optional folder of pseudo-label PNGs ``<id>.png`` (class indices, 255 = unlabelled), e.g.
            the BMP / AFA / SEAM labels CDSP's released code downloads; read into item["pseudo"] and
            transformed like the mask.

    Items (before ``transform``) are dicts: "image" (3, H, W) uint8 tensor; "mask" (H, W) int64
    (SegmentationClassAug for "trainaug", SegmentationClass otherwise; 255 = void); "scribble"
    (H, W) int64 (255 = unlabelled; only with ``with_scribbles``); "id" str. Errors name the file.
    """

    def __init__(self, root: Path, split: str = "trainaug", variant: ScribbleVariant = ScribbleVariant(clip=False),
                 transform=None, with_scribbles: bool = True, class_names: tuple[str, ...] = VOC_CLASSES,
                 pseudo_dir: Path | None = None):
        self.paths = check_voc(root, split, need_scribbles=with_scribbles)
        self.pseudo_dir = None if pseudo_dir is None else Path(pseudo_dir)
        if self.pseudo_dir is not None and not self.pseudo_dir.is_dir():
            raise FileNotFoundError(f"pseudo-label folder {self.pseudo_dir} does not exist: point pseudo_dir at a "
                                    "folder of <id>.png class-index maps (e.g. BMP / AFA / SEAM pseudo-labels)")
        self.split, self.variant, self.transform = split, variant, transform
        self.with_scribbles, self.class_names = with_scribbles, tuple(class_names)
        self.ids = read_ids(self.paths.voc, split)
        if not self.ids:
            raise ValueError(f"{self.paths.splits / split}.txt lists no ids")

    def __len__(self) -> int:
        return len(self.ids)

    def strokes(self, sid: str) -> tuple[list[Stroke], tuple[int, int]]:
        """The strokes of image ``sid`` after the variant's drop / shrink, and the XML's (H, W)."""
        strokes, size = read_xml(self.paths.scribbles / f"{sid}.xml", self.class_names)
        rng = np.random.default_rng([self.variant.seed, zlib.crc32(sid.encode())])
        return apply_variant(strokes, self.variant, rng), size

    def __getitem__(self, index: int) -> dict:
        sid = self.ids[index]
        img_path, mask_path = self.paths.images / f"{sid}.jpg", self.paths.mask_dir(self.split) / f"{sid}.png"
        img, mask = read_image(img_path), read_label(mask_path, len(self.class_names))
        check_same_size(img, mask, img_path, mask_path)
        item = {"id": sid, "image": torch.from_numpy(img.transpose(2, 0, 1).copy()),
                "mask": torch.from_numpy(mask.astype(np.int64))}
        if self.with_scribbles:
            strokes, size = self.strokes(sid)
            if size != mask.shape:
                raise ValueError(f"{self.paths.scribbles / sid}.xml says {size[1]}x{size[0]} but {mask_path} is "
                                 f"{mask.shape[1]}x{mask.shape[0]} (width x height)")
            scribble = diffuse_labels(img, rasterize(strokes, size, self.variant.width), self.variant)
            item["scribble"] = torch.from_numpy(scribble.astype(np.int64))
        if self.pseudo_dir is not None:
            pseudo_path = self.pseudo_dir / f"{sid}.png"
            pseudo = read_label(pseudo_path, len(self.class_names))
            check_same_size(img, pseudo, img_path, pseudo_path)
            item["pseudo"] = torch.from_numpy(pseudo.astype(np.int64))
        return self.transform(item) if self.transform is not None else item


class RandomScaleCropFlip:
    """DeepLab-style training transform on an item dict; makes items batchable.

    Rescales by a factor drawn uniformly from ``scale`` (image bilinear, "mask" / "scribble"
    nearest), normalises the image with ``mean`` / ``std``, pads bottom / right to at least
    ``crop`` (0 on the normalised image, i.e. the mean colour; 255 on labels), takes a random
    ``crop`` x ``crop`` window and flips it horizontally with probability 0.5 if ``flip``.
    URSS's extra augmentations (Sec. 5.1), off by default: ``rotation`` > 0 rotates by an angle drawn
    uniformly from [-rotation, rotation] degrees after the rescale (image bilinear with the mean colour
    outside, labels nearest with 255 outside); ``blur_sigma`` > 0 blurs the image with a 5 x 5 Gaussian of
    that standard deviation (the paper's 1.1) with probability 0.5 (the paper lists it among its random
    augmentations without a rate; 0.5 as for flips is our choice).

    Returns a new dict: "image" (3, crop, crop) float32, "rgb" (3, crop, crop) its colours on 0-255,
    labels (crop, crop) int64, other keys as is.
    Randomness comes from ``generator`` (a torch.Generator) or torch's global RNG (seeded per
    DataLoader worker).
    """

    def __init__(self, crop: int = 321, scale: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, generator: torch.Generator | None = None,
                 rotation: float = 0.0, blur_sigma: float = 0.0):
        self.crop, self.scale, self.flip, self.generator = crop, scale, flip, generator
        self.rotation, self.blur_sigma = rotation, blur_sigma
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def _rand(self) -> float:
        return torch.rand((), generator=self.generator).item()

    def __call__(self, item: dict) -> dict:
        keys = [k for k in ("mask", "scribble", "pseudo") if k in item]
        h, w = item["image"].shape[-2:]
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * self._rand()
        size = (max(1, round(h * s)), max(1, round(w * s)))
        img = F.interpolate(item["image"][None].float() / 255, size=size, mode="bilinear", align_corners=False)[0]
        img = (img - self.mean) / self.std
        labs = {k: F.interpolate(item[k][None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
                for k in keys}
        if self.rotation > 0 or self.blur_sigma > 0:
            from torchvision.transforms.v2 import functional as TF
        if self.rotation > 0:
            angle = (2 * self._rand() - 1) * self.rotation
            img = TF.rotate(img, angle, TF.InterpolationMode.BILINEAR, fill=0.0)  # 0 = the mean colour
            labs = {k: TF.rotate(v[None], angle, TF.InterpolationMode.NEAREST, fill=IGNORE_INDEX)[0]
                    for k, v in labs.items()}
        if self.blur_sigma > 0 and self._rand() < 0.5:
            img = TF.gaussian_blur(img, [5, 5], [self.blur_sigma, self.blur_sigma])
        pad = (0, max(self.crop - size[1], 0), 0, max(self.crop - size[0], 0))
        img = F.pad(img, pad, value=0.0)
        labs = {k: F.pad(v, pad, value=IGNORE_INDEX) for k, v in labs.items()}
        top = int(self._rand() * (img.shape[1] - self.crop + 1))
        left = int(self._rand() * (img.shape[2] - self.crop + 1))
        flip = self.flip and self._rand() < 0.5
        out = dict(item)
        rgb = (img * self.std + self.mean) * 255  # colours on 0-255 (padding = the mean colour), for affinities
        for k, v in [("image", img), ("rgb", rgb), *labs.items()]:
            v = v[..., top:top + self.crop, left:left + self.crop]
            out[k] = (v.flip(-1) if flip else v).contiguous()
        return out


class Normalize:
    """Evaluation transform: uint8 image (3, H, W) -> float32 normalised with ``mean`` / ``std``; labels as is."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __call__(self, item: dict) -> dict:
        return {**item, "image": (item["image"].float() / 255 - self.mean) / self.std, "rgb": item["image"].float()}


def collate(batch: list[dict]) -> dict:
    """Batch item dicts: tensors of one shape are stacked, anything else (ids, sizes that differ) is listed."""
    out = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        same = all(torch.is_tensor(v) for v in vals) and len({tuple(v.shape) for v in vals}) == 1
        out[k] = torch.stack(vals) if same else vals
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m scribbleseg.data.voc", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rasterize", help="ScribbleSup XML files -> palette PNGs (255 = unlabelled)")
    r.add_argument("xml_dir", type=Path)
    r.add_argument("out_dir", type=Path)
    r.add_argument("--width", type=int, default=3, help="brush width in pixels (1 or odd)")
    c = sub.add_parser("check", help="check the folder layout of a split, then open and validate every file")
    c.add_argument("root", type=Path)
    c.add_argument("--split", default="trainaug")
    c.add_argument("--no-scribbles", action="store_true")
    c.add_argument("--pseudo-dir", type=Path, default=None, help="also validate these pseudo-label PNGs")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "rasterize":
            n = len(rasterize_scribblesup(args.xml_dir, args.out_dir, args.width))
            print(f"wrote {n} PNGs to {args.out_dir}")
        else:
            ds = VOCScribbleDataset(args.root, args.split, with_scribbles=not args.no_scribbles,
                                    pseudo_dir=args.pseudo_dir)
            problems = validate(ds, progress=tqdm)
            if problems:
                ap.exit(1, f"error: {len(problems)} bad file(s) in split {args.split!r} under {args.root} "
                           f"({len(ds)} items checked):\n" + "\n".join(f"  - {p}" for p in problems) + "\n")
            print(f"{args.root}: split {args.split!r} complete, every file of its {len(ds)} items opens and is valid")
    except (FileNotFoundError, ValueError) as e:
        ap.exit(1, f"error: {e}\n")


if __name__ == "__main__":
    main()
