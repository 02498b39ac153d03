"""Potts relaxations and soft self-labeling for weakly-supervised segmentation (CVPR 2025). One module per concept:

- :mod:`~scribbleseg.potts.relaxations`: the six Potts relaxations of Tables 1-2;
- :mod:`~scribbleseg.potts.soft_cross_entropy`: H_CE, H_RCE, H_CCE (Eq. 7-9) and the quadratic H_Q;
- :mod:`~scribbleseg.potts.losses`: the network's terms of the losses (4) and (6);
- :mod:`~scribbleseg.potts.neighbourhood`: the 4-neighbour grid (NN) and dense bilateral (DN) affinities;
- :mod:`~scribbleseg.potts.solver`: the soft pseudo-label solver of App. B;
- :mod:`~scribbleseg.potts.random_walker`: the closed-form optimum of H_Q + P_Q (the solver's reference);
- :mod:`~scribbleseg.potts.blocks`: block-wise weak labels; :mod:`~scribbleseg.potts.noisy_labels`: Fig. 3's
  label-noise experiment;
- :mod:`~scribbleseg.potts.method`: the training methods ``PottsGD`` (loss 4) and ``SelfLabeling`` (loss 6);
- :mod:`~scribbleseg.potts.study`, :mod:`~scribbleseg.potts.analysis`, :mod:`~scribbleseg.potts.figures`: the
  notebooks' runs, diagnostics and figures.
"""
