"""CDSP, "Scribble Hides Class: Promoting Scribble-Based Weakly-Supervised Semantic Segmentation with Its
Class Label" (Zhang, Zhu, He, Jin, Lu; AAAI 2024). One module per concept:

- :mod:`~scribbleseg.cdsp.classifier`: stage 1, image-level labels from scribbles (Eq. 4), the multi-label
  classifier and its CAMs (Eq. 6), a plain training loop;
- :mod:`~scribbleseg.cdsp.pseudo_labels`: CAMs thresholded and merged into pseudo-labels (+ dense CRF),
  their mIoU, threshold sweeps (Table 3);
- :mod:`~scribbleseg.cdsp.store`: per-index pseudo-labels of a training split, flipped like the batch;
- :mod:`~scribbleseg.cdsp.supervision`: L_segs and label-smoothed L_segc, Eq. (7)-(9);
- :mod:`~scribbleseg.cdsp.lorm`: the localization rectification module, Eq. (10)-(13);
- :mod:`~scribbleseg.cdsp.distance_maps`: d_c and d_s, Eq. (14), (16);
- :mod:`~scribbleseg.cdsp.distance_entropy`: the distance entropy loss, Eq. (15), (17), (18);
- :mod:`~scribbleseg.cdsp.model`: the network with the LoRM on its last backbone features;
- the training method: :class:`scribbleseg.cdsp.method.CDSP`, Eq. (5).
"""
from scribbleseg.cdsp.classifier import CAMClassifier, ClassifierConfig, image_labels, train_classifier
from scribbleseg.cdsp.distance_entropy import distance_entropy, distance_entropy_loss
from scribbleseg.cdsp.distance_maps import distance_maps, pseudo_label_distance, scribble_distance
from scribbleseg.cdsp.lorm import LoRM
from scribbleseg.cdsp.model import CDSPNet
from scribbleseg.cdsp.pseudo_labels import pseudo_label_miou, pseudo_labels, threshold_sweep
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.cdsp.supervision import basic_supervision, smoothed_cross_entropy

__all__ = ["CAMClassifier", "CDSPNet", "ClassifierConfig", "LoRM", "PseudoLabels", "basic_supervision",
           "distance_entropy", "distance_entropy_loss", "distance_maps", "image_labels", "pseudo_label_distance",
           "pseudo_label_miou", "pseudo_labels", "scribble_distance", "smoothed_cross_entropy", "threshold_sweep",
           "train_classifier"]
