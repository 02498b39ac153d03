"""The rows of CDSP's tables (Zhang et al., AAAI 2024, Tables 2-3, Fig. 7) on one shared recipe.

Stage 1 makes pseudo-labels (:mod:`scribbleseg.cdsp.stage1`, cached per recipe and scribble variant);
stage 2 trains the segmentation network with the terms of Eq. (5) switched on or off. Every notebook
builds its rows here, so a row two notebooks share trains once through the results cache.
"""
from __future__ import annotations

from scribbleseg.cdsp.classifier import ClassifierConfig
from scribbleseg.cdsp.paper_numbers import TABLE2, TABLE2_SWITCHES
from scribbleseg.cdsp.stage1 import PseudoLabelRecipe, oracle_pseudo_labels, pseudo_label_set
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.cdsp.method import CDSP
from scribbleseg.lab.study import run_seeds


def row_name(segs: bool, segc: bool, ds: bool, dc: bool, lorm: bool) -> str:
    """Table 2's row as its loss terms: L_seg = L_segs + L_segc (Eq. 7), L_de = L_ds + L_dc (Eq. 18)."""
    terms = []
    if segs and segc:
        terms.append("L_seg")
    else:
        terms += ["L_segs"] * segs + ["L_segc"] * segc
    if ds and dc:
        terms.append("L_de")
    else:
        terms += ["L_ds"] * ds + ["L_dc"] * dc
    return " + ".join(terms + ["L_lorm"] * lorm)


def paper_table2() -> dict[str, float]:
    """The paper's Table 2 keyed by :func:`row_name`."""
    return {row_name(*switches): v for switches, v in TABLE2.items()}


def table2_rows(pseudo, rows=None, **common) -> dict[str, CDSP]:
    """Table 2's rows (all ten, or those of ``rows``: a list of :func:`row_name` names) with ``pseudo``; the
    scribble-only row L_segs gets no pseudo-labels (it does not read them), so its key is the same whatever
    the pseudo-labels: the pCE baseline of Fig. 7."""
    out = {}
    for s in TABLE2:
        on = dict(zip(TABLE2_SWITCHES, s))
        uses = on["segc"] or on["dc"] or on["lorm"]
        out[row_name(*s)] = CDSP(pseudo if uses else None, **on, **common)
    if rows is not None:
        unknown = set(rows) - set(out)
        if unknown:
            raise ValueError(f"unknown Table 2 row(s) {sorted(unknown)}; valid: {list(out)}")
        out = {k: out[k] for k in rows}
    return out


def recipe(classifier: dict, threshold: float, crf: bool = False) -> PseudoLabelRecipe:
    """A pseudo-label recipe from a notebook's params (``classifier``: ClassifierConfig fields)."""
    return PseudoLabelRecipe(ClassifierConfig(**classifier), threshold, crf)


def baseline(**common) -> CDSP:
    """The pCE baseline: L_segs alone (Table 2's first row), no pseudo-labels."""
    return CDSP(None, segc=False, ds=False, dc=False, lorm=False, **common)


def full(pseudo, **common) -> CDSP:
    """CDSP with every term on (Table 2's last row)."""
    return CDSP(pseudo, **common)


def run_variant(dataset, variant: ScribbleVariant, pl_recipe: PseudoLabelRecipe | None, seeds, train: dict,
                progress=None, log=print, **common):
    """(pseudo-label mIoU, CDSP runs per seed) on one training set: stage 1 on ``variant``'s scribbles, then
    full CDSP (Fig. 7, Table 3). ``pl_recipe=None``: the training masks as pseudo-labels (the oracle row)."""
    if pl_recipe is None:
        pseudo, score = oracle_pseudo_labels(dataset, variant)
    else:
        pseudo, score = pseudo_label_set(dataset, pl_recipe, variant, log=log)
    return score, run_seeds(dataset, variant, full(pseudo, **common), seeds, train, progress, log)
