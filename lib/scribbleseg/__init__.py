"""scribbleseg: scribble-supervised semantic segmentation, reproduced from the papers."""
from scribbleseg.constants import IGNORE_INDEX

__all__ = ["IGNORE_INDEX"]
__version__ = "0.1.0"
