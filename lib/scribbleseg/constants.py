"""Project-wide constants.

``IGNORE_INDEX`` marks unlabelled *pixels* in every label map (scribbles, masks, pseudo-labels).
It is never used as a channel index.
"""

IGNORE_INDEX = 255

#: Embedded benchmark: background + the 10 Fashion-MNIST classes (index = Fashion-MNIST label + 1).
EMBEDDED_CLASSES = (
    "background", "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)

#: PASCAL VOC 2012 class names as ScribbleSup's XML tags spell them (indices 0..20).
VOC_CLASSES = (
    "background", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor",
)
