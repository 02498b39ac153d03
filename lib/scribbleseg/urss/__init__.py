"""URSS (Pan et al., "Scribble-Supervised Semantic Segmentation by Uncertainty Reduction on Neural
Representation and Self-Supervision on Neural Eigenspace", ICCV 2021).

- :mod:`~scribbleseg.urss.entropy`: entropy, Eq. (2), and soft entropy outside pseudo-boundaries, Eq. (3);
- :mod:`~scribbleseg.urss.boundaries`: SLIC pseudo-boundaries B;
- :mod:`~scribbleseg.urss.random_walk`: the network-embedded random walk, Eq. (4)-(6) (+ the released
  code's position attention);
- :mod:`~scribbleseg.urss.transforms`: flip / translation pairs (t_phi, T_phi), Eq. (10), Fig. 5;
- :mod:`~scribbleseg.urss.self_supervision`: Eq. (7), explicit eigenspace Eq. (8), soft eigenspace Eq. (9);
- :mod:`~scribbleseg.urss.model`: the wrapped network. The training method is
  :class:`scribbleseg.urss.method.URSS`.

Cost: training never builds an (N, M, M) matrix (the walk is a fused attention, the eigenspace loss works on
the energies' factors with a hand-written gradient; see :mod:`~scribbleseg.urss.method`); the per-method step
times, as ratios to a pCE step measured in one run, are in the README's "Training cost per method" table
(``benchmarks/method_overhead.py``). SLIC pseudo-boundaries are computed once per image by default
(``boundaries="cached"``), about 0.16-0.2 s a batch of 16 with ``boundaries="batch"``.
"""
