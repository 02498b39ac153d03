"""Numbers printed in "Potts relaxations and soft self-labeling" (CVPR 2025), for the ``paper``
column beside ours. PASCAL VOC 2012 val mIoU (%), DeepLabV3+ MobileNetV2, ImageNet-pretrained,
batch 12, unless said otherwise. They are quoted, never used as results.
"""

LENGTHS = (0.0, 0.3, 0.5, 0.8, 1.0)  # scribble length ratios of Table 3

# Table 3: self-labeling with H_CCE on the 4-neighbour grid, per relaxation and length ratio.
TABLE3 = {
    "BL": (56.42, 61.74, 63.81, 65.73, 67.24),
    "NQ": (59.01, 65.53, 67.80, 70.63, 71.12),
    "Q": (58.92, 65.34, 67.81, 70.43, 71.05),
    "CCE": (56.40, 61.82, 63.81, 65.81, 67.41),
    "CD": (59.04, 65.52, 67.84, 70.93, 71.22),
    "LQ": (59.03, 65.44, 67.81, 70.80, 71.21),
}

# Table 4 (full-length scribbles). "*": reproduced by the authors from the cited code.
TABLE4 = {
    ("GD", "NN"): 67.0, ("GD", "DN"): 69.5,        # DN: DenseCRF loss [Tang et al.]*
    ("hard", "NN"): 69.6, ("hard", "DN"): 63.1,    # NN: GridCRF [Marin & Boykov]*, DN: ScribbleSup
    ("soft", "NN"): 71.1, ("soft", "DN"): 67.9,    # ours, H_CCE + P_Q (Sec. 3.3)
}

HARD_CCE_Q_FULL = 69.8          # Sec. 3.2: H_CCE + P_Q with argmax pseudo-labels, full length
Q_Q_CLOSED_FORM = (67.8, 68.97)  # Sec. 3.1: H_Q + P_Q, without / with an extra entropy term
SOLVER_SOFT_JACCARD = 99.2      # App. B: soft Jaccard (%) of the solver to the H_Q + P_Q optimum, 100 images
SOLVER_200_TO_100_DROP = 0.72   # App. B: mIoU 71.05 (200 steps) drops by 0.72 with 100 steps
SOLVER_SLOWDOWN_VS_DENSECRF = 3.0  # App. B: "about 3 times longer than the SGD with dense Potts"

# Fig. 4 (cross-entropies with P_Q, NN, against length) is a plot without printed numbers except
# H_CCE + P_Q = the "Q" row of Table 3.
