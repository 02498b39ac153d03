"""Per-item fields of URSS and CDSP (``prepare_item``): pseudo-boundaries and distance maps computed once per
transformed item (in the DataLoader's workers) equal today's per-batch computation, and ``losses`` uses them
without running SLIC / the EDT per step."""
import pickle

import numpy as np
import pytest
import torch

from scribbleseg.cdsp.distance_maps import distance_maps
from scribbleseg.cdsp.method import CDSP
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.voc import RandomScaleCropFlip, collate
from scribbleseg.models.small import SmallSegNet
from scribbleseg.urss.boundaries import batch_boundaries
from scribbleseg.urss.method import URSS

U, K, CROP = IGNORE_INDEX, 3, 32


def _raw(seed: int, with_pseudo: bool = True) -> dict:
    """An untransformed uint8 item, 40 x 48: two colour blocks plus noise, a scribble per block, a pseudo-label."""
    g = torch.Generator().manual_seed(seed)
    image = torch.full((3, 40, 48), 40, dtype=torch.int64)
    image[:, :, 24:] = torch.tensor([200, 90, 30]).view(3, 1, 1)            # right half: another colour
    image = (image + torch.randint(0, 30, image.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    mask = torch.zeros(40, 48, dtype=torch.int64)
    mask[:, 24:] = 2
    scribble = torch.full((40, 48), U)
    scribble[10:13, 4:20], scribble[25:28, 30:44] = 0, 2
    item = {"id": f"img{seed}", "image": image, "mask": mask, "scribble": scribble}
    if with_pseudo:
        pseudo = mask.clone()
        pseudo[30:, 24:] = 1                                                  # differs from the mask somewhere
        item["pseudo"] = pseudo
    return item


def _items(n: int = 3, with_pseudo: bool = True) -> list[dict]:
    """Transformed training items: scaled, cropped to 32 x 32 and flipped like VOC's (seed 4: items 0 and 2
    flipped, item 1 scaled to 24 x 29 and padded with IGNORE_INDEX)."""
    t = RandomScaleCropFlip(crop=CROP, scale=(0.6, 1.4), generator=torch.Generator().manual_seed(4))
    items = [t(_raw(i, with_pseudo)) for i in range(n)]
    assert n < 2 or (items[1]["mask"] == U).any()
    return items


def _model(method):
    torch.manual_seed(0)
    return method.wrap(SmallSegNet(K, width=4), K)


def _prepared(method, items) -> dict:
    return collate([{**item, **method.prepare_item(item)} for item in items])


def _forbid(monkeypatch, *targets):
    def boom(*args, **kwargs):
        raise AssertionError("computed per step")
    for t in targets:
        monkeypatch.setattr(t, boom)


URSS_METHODS = [URSS(n_segments=16), URSS(n_segments=16, boundaries="batch"),
                URSS.released(n_segments=16, self_supervision="eigenspace")]


@pytest.mark.parametrize("method", URSS_METHODS)
def test_urss_boundaries_per_item_equal_per_batch(method, monkeypatch):
    items = _items()
    plain, prepared = collate(items), _prepared(method, items)
    assert prepared["boundary"].shape == (3, CROP, CROP) and prepared["boundary"].dtype == torch.bool
    assert torch.equal(prepared["boundary"], batch_boundaries(plain["rgb"], 16, method.compactness))
    assert prepared["boundary"].any() and not prepared["boundary"].all()
    assert "boundary" not in items[0]                                         # the items are not modified
    expect = method.losses(_model(method), {**plain, "step": 1})              # today: SLIC inside losses
    _forbid(monkeypatch, "scribbleseg.urss.method.batch_boundaries", "scribbleseg.urss.method.batch_boundaries_cached")
    with pytest.raises(AssertionError, match="per step"):
        method.losses(_model(method), {**plain, "step": 1})
    got = method.losses(_model(method), {**prepared, "step": 1})
    assert set(got) == set(expect) and all(torch.equal(got[k], expect[k]) for k in expect)


def test_urss_prepares_nothing_without_the_soft_entropy():
    item = _items(1)[0]
    assert URSS(entropy="plain").prepare_item(item) == {} and URSS(entropy="none").prepare_item(item) == {}
    own = {**item, "boundary": torch.zeros(CROP, CROP, dtype=torch.bool)}
    assert URSS().prepare_item(own) == {}                                     # a Dataset's own boundaries stay


def test_urss_item_with_a_flip_follows_pseudo_boundaries():
    item = {**_items(1)[0], "flip": True}
    batch = {"rgb": item["rgb"][None], "flip": torch.tensor([True])}
    for method in (URSS(n_segments=16), URSS(n_segments=16, boundaries="batch")):
        assert torch.equal(method.prepare_item(item)["boundary"], method.pseudo_boundaries(batch)[0])


def _cdsp_methods():
    pl = PseudoLabels("pl-items")                                            # labels ride in item["pseudo"]
    return [CDSP(pseudo=pl), CDSP.released(pseudo=pl, lambda_s=2.0, lambda_c=3.0),
            CDSP(pseudo=pl, ds=False, lorm=False), CDSP(segc=False, dc=False, lorm=False)]


@pytest.mark.parametrize("method", _cdsp_methods())
def test_cdsp_distance_maps_per_item_equal_per_batch(method, monkeypatch):
    items = _items()
    plain, prepared = collate(items), _prepared(method, items)
    d_s, d_c = distance_maps(plain["scribble"], plain["pseudo"], method.lambda_s, method.lambda_c,
                             method.scribble_seeds, method.frame_is_boundary)
    assert ("distance_s" in prepared) == method.ds and ("distance_c" in prepared) == method.dc
    if method.ds:
        assert prepared["distance_s"].dtype == torch.float32 and torch.equal(prepared["distance_s"], d_s)
    if method.dc:
        assert prepared["distance_c"].shape == (3, CROP, CROP) and torch.equal(prepared["distance_c"], d_c)
        assert (prepared["distance_c"] == 0).any()                            # the pseudo-label's boundary
    expect = method.losses(_model(method), plain)                             # today: the EDT inside losses
    _forbid(monkeypatch, "scribbleseg.cdsp.method.distance_maps")
    with pytest.raises(AssertionError, match="per step"):
        method.losses(_model(method), plain)
    got = method.losses(_model(method), prepared)
    assert set(got) == set(expect) and all(torch.equal(got[k], expect[k]) for k in expect)


def test_cdsp_leaves_store_pseudo_labels_to_losses(monkeypatch):
    items = _items(with_pseudo=False)
    plain = collate(items)
    labels = np.zeros((3, CROP, CROP), np.uint8)
    labels[:, 8:24, 8:24] = 2                                                 # a square of class 2 per image
    pl = PseudoLabels.from_array(labels, np.zeros((3, CROP, CROP, 3), np.uint8))
    method = CDSP(pseudo=pl)
    assert set(method.prepare_item(items[0])) == {"distance_s"}              # no item["pseudo"]: no d_c here
    prepared = _prepared(method, items)
    store = {"index": torch.arange(3), "flip": torch.tensor([False, True, False])}
    expect = method.losses(_model(method), {**plain, **store})
    calls = []
    monkeypatch.setattr("scribbleseg.cdsp.method.distance_maps",
                        lambda s, p, *a: (calls.append((s, p)), distance_maps(s, p, *a))[1])
    got = method.losses(_model(method), {**prepared, **store})
    assert all(torch.equal(got[k], expect[k]) for k in expect)
    assert len(calls) == 1 and calls[0][0] is None and torch.equal(calls[0][1], pl.batch_labels(store | plain))


def test_methods_stay_picklable():
    items = _items(2)
    labels = np.ones((2, CROP, CROP), np.uint8)
    pl = PseudoLabels.from_array(labels, np.zeros((2, CROP, CROP, 3), np.uint8))
    for method in (URSS(n_segments=16), URSS.released(), CDSP(pseudo=pl), CDSP(pseudo=PseudoLabels("pl-x"))):
        back = pickle.loads(pickle.dumps(method))
        assert back == method and type(back) is type(method)
        for item in items:
            a, b = method.prepare_item(item), back.prepare_item(item)
            assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(pickle.loads(pickle.dumps(CDSP(pseudo=pl))).pseudo.labels, labels)  # the arrays travel
