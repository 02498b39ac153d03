"""The content-keyed memo (scribbleseg.memo) and CDSP's memoised distance maps: a hit is exactly a recomputation."""
import importlib

import numpy as np
import pytest
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.memo import ContentMemo, content_key

dm = importlib.import_module("scribbleseg.cdsp.distance_maps")


def test_memo_computes_once_per_content_and_settings():
    memo, calls = ContentMemo(), []

    def compute(a):
        calls.append(1)
        return a * 2.0

    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2)       # same bytes, other shape
    for _ in range(3):
        assert np.array_equal(memo.get(content_key(a, "x2"), lambda: compute(a)), a * 2)
    memo.get(content_key(b, "x2"), lambda: compute(b))
    memo.get(content_key(a, "other setting"), lambda: compute(a))
    assert len(calls) == 3 and memo.info()["hits"] == 2 and memo.info()["entries"] == 3


def test_memo_returns_copies_and_evicts_least_recently_used_beyond_its_budget():
    memo = ContentMemo(budget=2 * 8 * 4)                                     # two float64 arrays of 4
    keys = [content_key(np.full(4, i)) for i in range(3)]
    for i, k in enumerate(keys[:2]):
        memo.get(k, lambda i=i: np.full(4, float(i)))
    got = memo.get(keys[0], lambda: np.zeros(4) - 1)                          # a hit: keys[0] most recent
    got[:] = 99                                                               # the caller's copy only
    assert np.array_equal(memo.get(keys[0], lambda: np.zeros(4) - 1), np.zeros(4))
    memo.get(keys[2], lambda: np.full(4, 2.0))                                # evicts keys[1]
    assert memo.info()["entries"] == 2 and memo.info()["bytes"] == 64
    assert np.array_equal(memo.get(keys[1], lambda: np.full(4, 7.0)), np.full(4, 7.0))  # recomputed
    memo.clear()
    assert memo.info() == {"entries": 0, "hits": 0, "misses": 0, "bytes": 0}


def _labels(seed):
    rng = np.random.default_rng(seed)
    scribble = np.full((3, 24, 20), IGNORE_INDEX)
    scribble[:, 5, 3:15] = rng.integers(0, 4, (3, 1))
    scribble[:, 10:20, 12] = rng.integers(0, 4, (3, 1))
    pseudo = rng.integers(0, 3, (3, 24, 20))
    pseudo[1] = 0                                                             # no foreground: d_c = 1
    return torch.from_numpy(scribble), torch.from_numpy(pseudo)


@pytest.mark.parametrize("args", [(1.0, 6.0, "all", False), (2.0, 7.0, "foreground", True)])
def test_memoised_distance_maps_equal_the_computation_bit_for_bit(args, monkeypatch):
    dm.MEMO.clear()
    scribble, pseudo = _labels(3)
    ref_s = torch.as_tensor(np.stack([dm.scribble_distance(x, args[0], args[2]) for x in scribble.numpy()]),
                            dtype=torch.float32)
    ref_c = torch.as_tensor(np.stack([dm.pseudo_label_distance(x, args[1], args[3]) for x in pseudo.numpy()]),
                            dtype=torch.float32)
    first = dm.distance_maps(scribble, pseudo, *args)
    monkeypatch.setattr(dm.ndimage, "distance_transform_edt", None)         # a recomputation would fail now
    second = dm.distance_maps(scribble, pseudo, *args)
    for got in (first, second):
        assert torch.equal(got[0], ref_s) and torch.equal(got[1], ref_c)
    assert dm.MEMO.info()["hits"] == 6
    monkeypatch.undo()
    flipped = dm.distance_maps(scribble.flip(-1), None, *args)[0]             # other content: a new entry
    assert torch.equal(flipped, ref_s.flip(-1))                               # the EDT is flip-equivariant
    dm.MEMO.clear()


def test_prepare_item_does_not_fill_the_memo():
    from scribbleseg.cdsp.method import CDSP
    dm.MEMO.clear()
    scribble, pseudo = _labels(4)
    from scribbleseg.cdsp.store import PseudoLabels
    got = CDSP(pseudo=PseudoLabels("pl-items")).prepare_item({"scribble": scribble[0], "pseudo": pseudo[0]})
    assert set(got) == {"distance_s", "distance_c"} and dm.MEMO.info()["entries"] == 0
    assert torch.equal(got["distance_s"], dm.distance_maps(scribble[:1], None)[0][0])
    dm.MEMO.clear()
