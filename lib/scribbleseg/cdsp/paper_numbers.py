"""Numbers printed in CDSP (Zhang et al., AAAI 2024), for the ``paper`` column beside ours: ScribbleSup
(PASCAL VOC 2012 val) mIoU (%). Quoted, never used as results."""

#: Table 2 (ResNet-50 DeepLabV2, lambda_s = 1, lambda_c = 6): (segs, segc, ds, dc, lorm) -> mIoU.
TABLE2 = {
    (True, False, False, False, False): 66.17,
    (False, True, False, False, False): 67.23,
    (True, True, False, False, False): 72.13,
    (True, True, False, True, False): 67.33,
    (True, True, True, False, False): 73.38,
    (True, True, True, True, False): 73.58,
    (True, True, False, False, True): 73.26,
    (True, True, True, False, True): 73.51,
    (True, True, False, True, True): 73.64,
    (True, True, True, True, True): 73.91,
}
TABLE2_SWITCHES = ("segs", "segc", "ds", "dc", "lorm")  # the CDSP fields, in the order of TABLE2's keys

#: Table 3 (DeepLabV3+): pseudo-label source -> (its own mIoU, CDSP with ResNet-50, with ResNet-101).
TABLE3 = {"SEAM": (64.5, 69.8, 71.8), "AFA": (66.0, 71.5, 73.3), "BMP": (68.1, 73.9, 75.9)}

#: Table 1, CDSP rows (val, test): backbone + segmentor -> mIoU; lambda_s = e^2, lambda_c = e^7.
TABLE1 = {"r50+v2": (73.9, 74.2), "r101+v2": (75.3, 75.3), "r101+v3p": (75.9, 76.0),
          "baseline r101+v3p (scribble only)": (66.2, 69.7)}
