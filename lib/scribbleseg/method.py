"""What a training method is, for the one training loop (:func:`scribbleseg.train.train`).

A method is a frozen dataclass of hyperparameters (no hidden state) with

- ``losses(model, batch) -> dict[str, Tensor]``: its loss terms, which the loop sums and logs;
- optionally ``wrap(base, num_classes) -> nn.Module``: the network with the method's own modules;
- optionally ``prepare_item(item) -> dict[str, Tensor]``: per-item inputs of its losses (URSS's pseudo-boundaries,
  CDSP's distance maps), computed by the loader's workers on each transformed item of a Dataset split and
  stacked into the batch (:mod:`scribbleseg.loader`), so that ``losses`` does no per-step CPU work;
- ``NAME``, a class attribute: the stable name under which its runs are cached
  (:func:`scribbleseg.experiment.experiment_key`), so that moving the class to another module does not
  change any key; and optionally ``KEY_OPTIONAL`` ({field: default}): fields added after runs were
  cached, which enter the key only when not at their default.

No registry: a notebook imports the class it wants.
"""
from __future__ import annotations


def check_choices(obj, choices: dict[str, tuple]) -> None:
    """ValueError naming the class, the field, its allowed values and the given one, for the first field of
    ``obj`` whose value is not among ``choices[field]``."""
    for name, ok in choices.items():
        value = getattr(obj, name)
        if value not in ok:
            raise ValueError(f"{type(obj).__name__}.{name} must be one of {ok}, got {value!r}")
