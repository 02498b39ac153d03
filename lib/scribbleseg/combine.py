"""A method made of other methods' loss terms (ours; no paper has it): issue 16's combination.

    L = sum_m  w_m  sum_{t in keep_m}  L_m,t                       (each L_m,t as the method m computes it)

``Combined(methods=(BLPSeg(), URSS(random_walk="none"), SelfLabeling()), keep=(None, ("entropy",), ("entropy",)))``
trains the LAM network with BLPSeg's BLP loss, URSS's soft entropy (Eq. 3) and the Potts soft self-labelling
term (Eq. 6): every method keeps its own losses function; this class only prefixes and sums their dicts.

Rules:

- **The network is the first method's** (its ``wrap``); the later methods' ``wrap`` is not applied, and their
  losses read the first network's outputs. A later method that needs outputs of its own network (URSS's walk
  factors, CDSP's LoRM) fails at its first step with a KeyError naming it and the missing output.
- **One forward pass** of ``batch["image"]`` serves every method: the first call of the network on that very
  tensor is kept for the step (:class:`SharedForward`) and later calls on it return the same outputs, whatever
  other arguments they pass (the first method's, e.g. BLPSeg's LAM sources, decide). Calls on other tensors
  (URSS's transformed image t(x)) run the network. Under DDP the one pass goes through the wrapper as usual.
- ``keep[m]``: the names of method m's terms that enter the sum (None: all). Each method's terms are still all
  computed (e.g. every method's own pCE), so that its ``losses`` runs unchanged; drop the duplicates here.
- Terms are logged as "<prefix>/<term>", prefix the lower-cased class name unless ``prefixes`` says otherwise.
- ``prepare_item``: the union of the methods' per-item inputs (an error if two deliver the same key).
- Cache key: ``NAME`` and each method's own key spec (:func:`scribbleseg.experiment.experiment_key` calls
  :meth:`key_spec`), so combinations of different methods with equal fields never share a key.

Written by hand: composing loss dicts is the whole job; no library does it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import torch


class SharedForward:
    """The network for one training step, answering repeated calls on the step's image with the first call's
    outputs. Not an ``nn.Module`` (it owns no parameters); its ``_orig_mod`` attribute is the network, so
    :func:`scribbleseg.distributed.unwrap` strips it as it strips a ``torch.compile`` wrapper, and other
    attributes read through to the network."""

    def __init__(self, model, image: torch.Tensor):
        self._orig_mod, self._image, self._out = model, image, None

    def __call__(self, x, *args, **kwargs):
        if x is not self._image:
            return self._orig_mod(x, *args, **kwargs)                        # another input: its own pass
        if self._out is None:
            self._out = self._orig_mod(x, *args, **kwargs)                   # the step's one pass
        return self._out

    def __getattr__(self, name):
        return getattr(self._orig_mod, name)


@dataclasses.dataclass(frozen=True)
class Combined:
    """Args:
        methods: the methods combined (a tuple, at least one); the first one's ``wrap`` builds the network.
        keep: per method, the names of the terms summed (None: all of them); None: all terms of every method.
        weights: per method, a factor on its kept terms (None: 1 each).
        prefixes: per method, the prefix of its terms' names (None: the lower-cased class names).

    ``losses(model, batch)`` returns {"<prefix>/<term>": scalar} for the kept terms, weighted.
    """

    methods: tuple
    keep: tuple | None = None
    weights: tuple[float, ...] | None = None
    prefixes: tuple[str, ...] | None = None

    NAME: ClassVar[str] = "scribbleseg.combine.Combined"

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        n = len(self.methods)
        if n == 0 or not all(callable(getattr(m, "losses", None)) for m in self.methods):
            raise ValueError(f"Combined.methods must be one or more methods (objects with losses), got {self.methods!r}")
        for field in ("keep", "weights", "prefixes"):
            value = getattr(self, field)
            if value is not None:
                value = tuple(None if v is None else (tuple(v) if field == "keep" else v) for v in value)
                object.__setattr__(self, field, value)
                if len(value) != n:
                    raise ValueError(f"Combined.{field} has {len(value)} entries for {n} methods: give one per method")
        if len(set(self.names)) != n:
            raise ValueError(f"Combined term prefixes {self.names} repeat: set Combined.prefixes to distinct names")

    @property
    def names(self) -> tuple[str, ...]:
        """The prefix of each method's terms."""
        return self.prefixes or tuple(type(m).__name__.lower() for m in self.methods)

    def key_spec(self, spec_of: Callable) -> dict:
        """This method's part of a cache key, each combined method entering as ``spec_of(method)``."""
        return {"class": self.NAME, "methods": [spec_of(m) for m in self.methods],
                "keep": None if self.keep is None else [None if k is None else list(k) for k in self.keep],
                "weights": None if self.weights is None else list(self.weights), "prefixes": self.prefixes}

    def wrap(self, base, num_classes: int):
        first = self.methods[0]
        return first.wrap(base, num_classes) if hasattr(first, "wrap") else base

    def prepare_item(self, item: dict) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, m in zip(self.names, self.methods):
            extra = m.prepare_item(item) if hasattr(m, "prepare_item") else {}
            clash = set(extra) & set(out)
            if clash:
                raise ValueError(f"Combined: {name} delivers per-item inputs {sorted(clash)} that another method "
                                 f"already delivers; combine methods whose prepare_item keys differ")
            out.update(extra)
        return out

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        shared = SharedForward(model, batch["image"])
        terms = {}
        for i, (name, m) in enumerate(zip(self.names, self.methods)):
            try:
                own = m.losses(shared, batch)
            except KeyError as e:
                raise KeyError(f"Combined: {name} ({type(m).__name__}) reads {e.args[0]!r}, which the network of "
                               f"{self.names[0]} ({type(self.methods[0]).__name__}) does not output; put the method "
                               f"that needs its own network first, or use one that reads only 'logits'") from e
            keep = None if self.keep is None else self.keep[i]
            if keep is not None and not set(keep) <= set(own):
                raise ValueError(f"Combined.keep for {name}: {sorted(set(keep) - set(own))} not among its terms "
                                 f"{sorted(own)} (a term can be off in that method's settings)")
            w = 1.0 if self.weights is None else self.weights[i]
            for t, v in own.items():
                if keep is None or t in keep:
                    terms[f"{name}/{t}"] = v if w == 1.0 else w * v             # w_m L_m,t
        return terms                                                         # summed by the loop
