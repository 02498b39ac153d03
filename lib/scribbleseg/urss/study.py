"""The rows of URSS's tables (Pan et al., ICCV 2021, Tables 1-2, Fig. 6) and its two-stage training.

Stage 1 (Sec. 4) trains pCE + uncertainty reduction from scratch; stage 2 starts from the stage-1 run
of the same seed (:func:`scribbleseg.lab.study.run_stage_two`, ``init=``) and adds the self-supervision. Every notebook builds
its rows here, so a row two notebooks share trains once through the results cache.

Args shared by the row builders (``common``): URSS keyword arguments every row carries (e.g.
``entropy_weight``, ``n_segments``, ``gamma``, ``ss_weight``; see :class:`scribbleseg.urss.method.URSS`).
"""
from __future__ import annotations

from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.urss.method import URSS
from scribbleseg.lab.study import run_stage_two  # noqa: F401  (the notebooks' study.run_stage_two)

LOCATIONS = {"f^(L-1)": "features_in", "f^L": "features_out", "eigenspace": "eigenspace"}
TRANSFORMS = {"flip": "flip", "translation": "translate", "random": "random"}


def table1_rows(**common) -> dict[str, URSS]:
    """Table 1: pCE baseline, + entropy (Eq. 2), + soft entropy (Eq. 3), + random walk (Eq. 5-6), all."""
    return {"baseline": URSS(random_walk="none", entropy="none", **common),
            "+ entropy": URSS(random_walk="none", entropy="plain", **common),
            "+ soft entropy": URSS(random_walk="none", entropy="soft", **common),
            "+ random walk": URSS(random_walk="paper", entropy="none", **common),
            "+ UR (all)": ur(**common)}


def ur(**common) -> URSS:
    """Stage 1 of URSS: pCE + soft entropy + random walk (the best row of Table 1)."""
    return URSS(random_walk="paper", entropy="soft", **common)


def table2_rows(transforms=tuple(TRANSFORMS), locations=tuple(LOCATIONS), control: bool = True,
                **common) -> dict[str, URSS]:
    """Table 2's stage-2 rows "transform, location" (+ "no self-supervision": stage 1 trained on for the
    same steps without it, so that a gain is not just longer training)."""
    rows = {"no self-supervision": ur(**common)} if control else {}
    for t in transforms:
        for loc in locations:
            rows[f"{t}, {loc}"] = ur(self_supervision=LOCATIONS[loc], transform=TRANSFORMS[t], **common)
    return rows


def urss(**common) -> URSS:
    """Stage 2 of full URSS: UR + self-supervision on the eigenspace with a random transform (Table 2's best)."""
    return ur(self_supervision="eigenspace", transform="random", **common)


def drop_shrink_variants(drop_rates, shrink_rates, width: int = 3) -> dict[str, ScribbleVariant]:
    """Fig. 6's training sets: {"drop 0.3": ScribbleVariant(drop=0.3), "shrink 0.5": ...}; rate 0 of either
    is the full scribbles (named "full")."""
    out = {}
    for r in drop_rates:
        out["full" if r == 0 else f"drop {r:g}"] = ScribbleVariant(width, drop=r)
    for r in shrink_rates:
        out["full" if r == 0 else f"shrink {r:g}"] = ScribbleVariant(width, shrink=r)
    return out


def best_location(means: dict[str, float]) -> dict[str, str]:
    """Table 2's reading: for each transform, the location whose row "transform, location" has the highest
    value in ``means`` ({row name: mIoU}; rows of other names are skipped)."""
    best: dict[str, tuple[float, str]] = {}
    for name, v in means.items():
        t, _, loc = name.partition(", ")
        if t in TRANSFORMS and loc in LOCATIONS and (t not in best or v > best[t][0]):
            best[t] = (v, loc)
    return {t: loc for t, (_, loc) in best.items()}
