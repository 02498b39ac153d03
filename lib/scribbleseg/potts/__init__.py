"""Potts relaxations and soft self-labeling (CVPR 2025): neighbourhoods, the pseudo-label solver,
the closed-form random-walker reference and block-wise weak labels. The potentials and
cross-entropies themselves are in :mod:`scribbleseg.losses`."""
