"""Numbers printed in BLPSeg (Wang et al., IEEE TIP 2023), for the ``paper`` column beside ours:
PASCAL VOC 2012 val mIoU (%) without CRF, UperNet ResNet-101 (ImageNet), mean of 3 runs. Quoted, never
used as results."""

TABLE1 = {"baseline": 72.641, "+ LAM": 74.015, "+ LAM + BLP": 75.642}           # Table I (std 0.172 / 0.222 / 0.033)
TABLE2 = {"CE": 74.015, "focal": 72.921, "BLP": 75.642}                        # Table II, all with LAM
TABLE4_SIGMA = {3: 75.099, 6: 75.642, 12: 75.115, 24: 74.381, 48: 74.044, "learnable": 75.608}  # learnt sigma: 4.8
TABLE5_REGION = {"labelled": 74.838, "unlabelled": 75.577, "all": 75.642}
TABLE6_DIFFUSION = {"none": 72.641, "label diffusion": 73.130, "gradient diffusion (LAM)": 74.015, "both": 73.960}
TABLE3_SIMILARITY = {"none": 73.206, "low": 73.554, "distance": 64.438, "low + distance": 75.642, "high": 56.044,
                     "high + distance": 54.297, "low + high + distance": 73.280}  # Table III (with BLP loss)
TABLE4_LEARNT_SIGMA = 4.8  # Sec. V-D-1: the learnable sigma "converged to a value of 4.8" (initial 6)
