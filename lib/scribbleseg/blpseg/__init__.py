"""BLPSeg: Balance the Label Preference in Scribble-Supervised Semantic Segmentation (Wang et al., IEEE TIP 2023).
One module per concept:

- :mod:`~scribbleseg.blpseg.losses`: the scribble head's WCE (Eq. 1-2), the annotation probability map, the BLP
  loss (Eq. 9-11) and the focal loss; :mod:`~scribbleseg.blpseg.labelled`: the BLP loss evaluated at the labelled
  pixels from the grid logits (the same function, cheaper);
- :mod:`~scribbleseg.blpseg.lam`: the local aggregation module (Eq. 3-8), with its dense form materialised; its
  terms (Eq. 5) in :mod:`~scribbleseg.blpseg.lam_terms`, the dense form as a fused attention in
  :mod:`~scribbleseg.blpseg.lam_attention`, the windowed form in :mod:`~scribbleseg.blpseg.lam_local`;
- :mod:`~scribbleseg.blpseg.model`: the two-head network with the LAM;
- :mod:`~scribbleseg.blpseg.method`: the training method, loss (12), self-training and the released-code options;
- :mod:`~scribbleseg.blpseg.study`, :mod:`~scribbleseg.blpseg.analysis`, :mod:`~scribbleseg.blpseg.figures`: the
  notebooks' rows, maps and distributions (Eq. 13), figures.

The superpixel label-diffusion baseline (Table VI) is a scribble variant of the core:
``ScribbleVariant(superpixels=...)``, :mod:`scribbleseg.data.label_diffusion`.
"""
