"""BLPSeg (Wang et al., IEEE TIP 2023): annotation probability map, local aggregation module (LAM),
BLP loss, self-training and the label-diffusion baseline. Losses are in :mod:`scribbleseg.losses`."""
