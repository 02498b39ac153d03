"""Methods: frozen dataclasses holding hyperparameters, whose ``losses(model, batch)`` returns a dict
of named loss terms. The training loop sums and logs them. No registry: import the class you want."""
from scribbleseg.methods.baseline import PartialCE
from scribbleseg.methods.potts import PottsGD, SelfLabeling

__all__ = ["PartialCE", "PottsGD", "SelfLabeling"]
