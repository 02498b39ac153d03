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

Cost measured on the embedded set (2-core CPU, batch 16, 128 x 128, SmallSegNet width 16, 32 x 32 grid,
forward + backward): pCE 0.25 s; stage 1 (random walk + soft entropy) 0.70 s with SLIC per batch
(``boundaries="batch"``), of which SLIC about 0.16-0.2 s; with the default cached boundaries (computed
once per image in the first epoch, then a 3 ms look-up per batch) 0.55 s after the first epoch (measured
one thread, steps interleaved: 0.70 -> 0.55 s, plain entropy 0.54 s); stage 2 (+ the t_phi(x) pass
and Eq. 9) 1.7 s, the released variant 1.4 s (both measured with SLIC per batch).
"""
