"""Numbers printed in URSS (Pan et al., ICCV 2021), for the ``paper`` column beside ours: scribblesup
(PASCAL VOC 2012 with scribbles) val mIoU (%), DeepLabV2 ResNet-50, without CRF. Quoted, never used as
results.

Table 1's check-mark columns (entropy, boundary, random walk) are garbled in our copy of the paper; the
row order is the text's ("starting with baseline, we gradually add entropy minimization, boundary
exclusion, and random walk"): baseline, + entropy, + soft entropy (entropy + boundary), + random walk,
and all of them. Fig. 6 (drop / shrink curves) is an image without printed numbers: nothing is quoted.
"""

TABLE1 = {"baseline": 66.8, "+ entropy": 69.3, "+ soft entropy": 69.4, "+ random walk": 70.0, "+ UR (all)": 70.9}

# Table 2: self-supervision after the best Table 1 network (70.9), transform x location.
TABLE2 = {"flip, f^(L-1)": 72.5, "flip, f^L": 72.5, "flip, eigenspace": 72.9,
          "translation, f^(L-1)": 71.9, "translation, f^L": 70.0, "translation, eigenspace": 72.6,
          "random, f^(L-1)": 72.4, "random, f^L": 71.6, "random, eigenspace": 73.0,
          "no self-supervision": 70.9}

# Table 3: mean relative variation |T(f) - f'| / (|T(f)| + |f'|) under the same transform, in %.
TABLE3 = {"flip": {"f^(L-1)": 52.8, "f^L": 37.5, "P": 6.7}, "translation": {"f^(L-1)": 7.5, "f^L": 12.0, "P": 3.5}}

# Table 5: parameters (M), training memory (MB), inference speed (it/s); the last two rows are increments.
TABLE5 = {"baseline": {"params_M": 41.72, "memory_MB": 2015.5, "speed_it_s": 4.21},
          "+ UR (increment)": {"params_M": 1.24, "memory_MB": 37.2, "speed_it_s": 0.32},
          "+ SS (increment)": {"params_M": 0.0, "memory_MB": 10.8, "speed_it_s": 0.0}}
