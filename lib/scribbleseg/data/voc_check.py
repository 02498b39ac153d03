"""Open and validate every file of a VOC split, with the readers the loader itself uses
(:func:`~scribbleseg.data.io.read_image`, :func:`~scribbleseg.data.io.read_label`,
:func:`~scribbleseg.data.io.check_same_size`, :func:`~scribbleseg.data.strokes.read_xml`): what
``python -m scribbleseg.data.voc check`` runs after the layout check.

The loader stops at the first bad file of an item; this reads every file of every item and reports them all
(a real trainaug split holds about 10,582 items, so it shows a progress bar). Each problem names the file, says
what is wrong and what to do. It takes a :class:`~scribbleseg.data.voc.VOCScribbleDataset` (duck-typed: its
``ids``, ``paths``, ``split``, ``class_names``, ``with_scribbles``, ``pseudo_dir``), so it imports nothing of
:mod:`scribbleseg.data.voc`, which imports it.
"""
from __future__ import annotations

from scribbleseg.data.io import check_same_size, read_image, read_label
from scribbleseg.data.strokes import read_xml

_FIX = {"image": "re-extract it from VOCtrainval_11-May-2012.tar",
        "mask": "re-extract it (SegmentationClass from the VOC devkit, SegmentationClassAug from SBD)",
        "scribble": "re-download ScribbleSup's pascal_2012 annotations",
        "pseudo": "regenerate it, or remove it from the pseudo-label folder"}
_ERRORS = (FileNotFoundError, ValueError, OSError)


def _problem(kind: str, error: Exception) -> str:
    return f"{error} -> {_FIX[kind]}"


def item_problems(ds, sid: str) -> list[str]:
    """Every problem of item ``sid``: unreadable or missing files, label values out of range, sizes that differ."""
    problems, img, mask = [], None, None
    img_path, mask_path = ds.paths.images / f"{sid}.jpg", ds.paths.mask_dir(ds.split) / f"{sid}.png"
    try:
        img = read_image(img_path)
    except _ERRORS as e:
        problems.append(_problem("image", e))
    try:
        mask = read_label(mask_path, len(ds.class_names))
    except _ERRORS as e:
        problems.append(_problem("mask", e))
    if img is not None and mask is not None:
        try:
            check_same_size(img, mask, img_path, mask_path)
        except ValueError as e:
            problems.append(_problem("mask", e))
    if ds.with_scribbles:
        xml = ds.paths.scribbles / f"{sid}.xml"
        try:
            _, size = read_xml(xml, ds.class_names)
            if mask is not None and size != mask.shape:
                problems.append(_problem("scribble", ValueError(
                    f"{xml} says {size[1]}x{size[0]} but {mask_path} is {mask.shape[1]}x{mask.shape[0]} (width x height)")))
        except _ERRORS as e:
            problems.append(_problem("scribble", e))
    if ds.pseudo_dir is not None:
        path = ds.pseudo_dir / f"{sid}.png"
        try:
            pseudo = read_label(path, len(ds.class_names))
            if img is not None:
                check_same_size(img, pseudo, img_path, path)
        except _ERRORS as e:
            problems.append(_problem("pseudo", e))
    return problems


def validate(ds, progress=None) -> list[str]:
    """The problems of every item of ``ds`` (empty when all files load); ``progress``: a tqdm-like wrapper."""
    ids = progress(ds.ids, desc=f"checking {ds.split}", unit="item") if progress else ds.ids
    return [p for sid in ids for p in item_problems(ds, sid)]
