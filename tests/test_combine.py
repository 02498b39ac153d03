"""Combined (scribbleseg.combine): a method summing other methods' prefixed terms on one shared forward pass."""
import pytest
import torch

from scribbleseg.baseline import PartialCE
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.cdsp.method import CDSP
from scribbleseg.combine import Combined, SharedForward
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.embedded import EmbeddedConfig
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.distributed import unwrap
from scribbleseg.experiment import experiment_key, run_experiment
from scribbleseg.models.small import SmallSegNet
from scribbleseg.potts.method import PottsGD, SelfLabeling
from scribbleseg.train import TrainConfig
from scribbleseg.urss.method import URSS


def _batch(n=2, size=32):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, size, size, generator=g) * 255
    scribble = torch.full((n, size, size), IGNORE_INDEX)
    scribble[:, 4:8, 4:20] = 1
    scribble[:, 20:24, 8:12] = 0
    return {"image": (rgb / 255 - 0.45) / 0.25, "rgb": rgb, "scribble": scribble, "index": torch.arange(n), "step": 0}


def _model(method, k=3, dtype=torch.float32):
    torch.manual_seed(0)
    base = SmallSegNet(k, width=4)
    return (method.wrap(base, k) if hasattr(method, "wrap") else base).to(dtype)


class Counting(torch.nn.Module):
    """A network that counts its forward passes (unwrap() strips it, as it strips torch.compile's wrapper)."""

    def __init__(self, net):
        super().__init__()
        self._orig_mod, self.calls = net, 0

    def forward(self, x, *args):
        self.calls += 1
        return self._orig_mod(x, *args)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_one_method_alone_equals_that_method_with_prefixed_terms():
    batch = _batch()
    a, b = _model(PartialCE()), _model(PartialCE())
    ta, tb = PartialCE().losses(a, batch), Combined((PartialCE(),)).losses(b, batch)
    assert list(tb) == ["partialce/ce"] and torch.equal(ta["ce"], tb["partialce/ce"])
    ta["ce"].backward(), tb["partialce/ce"].backward()
    assert torch.equal(_grads(a), _grads(b))


def test_terms_are_the_methods_own_weighted_and_kept_on_one_forward_pass():
    batch = _batch()
    gd, sl = PottsGD(neighbourhood="grid"), SelfLabeling(steps=5)
    combo = Combined((BLPSeg(), gd, sl), keep=(None, ("potts",), ("self",)), weights=(1.0, 2.0, 0.5))
    net = Counting(_model(BLPSeg(), dtype=torch.float64))
    terms = combo.losses(net, {**batch, "image": batch["image"].double()})
    assert net.calls == 1                                                    # one pass for three methods
    assert set(terms) == {"blpseg/seg", "blpseg/scribble_head", "pottsgd/potts", "selflabeling/self"}
    # each method alone, on the same network's outputs: w_m * L_m,t (hand-composed, two passes of equal weights)
    ref = _model(BLPSeg(), dtype=torch.float64)
    b64 = {**batch, "image": batch["image"].double()}
    own_b = BLPSeg().losses(ref, b64)
    out = ref(b64["image"], None)                                            # region "all": no LAM sources

    def fixed(x, *_):
        return out
    own_gd, own_sl = gd.losses(fixed, b64), sl.losses(fixed, b64)
    for t in ("seg", "scribble_head"):
        assert torch.allclose(terms[f"blpseg/{t}"], own_b[t], rtol=1e-12)
    assert torch.allclose(terms["pottsgd/potts"], 2.0 * own_gd["potts"], rtol=1e-12)
    assert torch.allclose(terms["selflabeling/self"], 0.5 * own_sl["self"], rtol=1e-12)
    sum(terms.values()).backward()
    (own_b["seg"] + own_b["scribble_head"] + 2.0 * own_gd["potts"] + 0.5 * own_sl["self"]).backward()
    assert torch.allclose(_grads(net), _grads(ref), atol=1e-10)


def test_a_call_on_another_tensor_runs_the_network():
    net = Counting(_model(PartialCE()))
    x = _batch()["image"]
    shared = SharedForward(net, x)
    first, again = shared(x), shared(x)
    assert first is again and net.calls == 1
    shared(x.flip(-1))
    assert net.calls == 2 and unwrap(shared) is unwrap(net)


def test_urss_entropy_on_the_blpseg_network():
    batch = _batch()
    combo = Combined((BLPSeg(), URSS(random_walk="none")), keep=(None, ("entropy",)))
    terms = combo.losses(_model(combo), batch)
    assert set(terms) == {"blpseg/seg", "blpseg/scribble_head", "urss/entropy"}
    assert all(torch.isfinite(v) for v in terms.values())
    urss = URSS(random_walk="none", self_supervision="features_out", transform="flip")
    net = Counting(_model(urss))
    terms = Combined((urss, PottsGD(neighbourhood="grid")), keep=(None, ("potts",))).losses(net, batch)
    assert set(terms) == {"urss/ce", "urss/entropy", "urss/ss", "pottsgd/potts"}
    assert net.calls == 2                                                    # x once, t(x) once


def test_bad_combinations_are_named():
    with pytest.raises(ValueError, match="one or more methods"):
        Combined(())
    with pytest.raises(ValueError, match="keep has 1 entries for 2 methods"):
        Combined((PartialCE(), PottsGD()), keep=(None,))
    with pytest.raises(ValueError, match="prefixes .* repeat"):
        Combined((PartialCE(), PartialCE("mask")))
    combo = Combined((PartialCE(), PottsGD(neighbourhood="grid")), keep=(None, ("entropy",)))  # eta = 0: no entropy
    with pytest.raises(ValueError, match=r"keep for pottsgd: \['entropy'\] not among its terms \['ce', 'potts'\]"):
        combo.losses(_model(combo), _batch())
    combo = Combined((PartialCE(), URSS(random_walk="none", self_supervision="features_in")))
    with pytest.raises(KeyError, match="urss \\(URSS\\) reads 'features_in'.*partialce"):
        combo.losses(_model(combo), _batch())
    with pytest.raises(ValueError, match="urss2 delivers per-item inputs \\['boundary'\\]"):
        Combined((URSS(), URSS(entropy_weight=2.0)), prefixes=("urss", "urss2")).prepare_item(
            {"rgb": _batch()["rgb"][0], "scribble": _batch()["scribble"][0]})


def test_prepare_item_is_the_union_of_the_methods():
    b = _batch()
    item = {"rgb": b["rgb"][0], "scribble": b["scribble"][0]}
    cdsp = CDSP(segc=False, dc=False, lorm=False)                            # L_segs and L_ds: no pseudo-labels
    got = Combined((cdsp, URSS())).prepare_item(item)
    assert set(got) == {"distance_s", "boundary"}
    assert torch.equal(got["boundary"], URSS().prepare_item(item)["boundary"])
    assert torch.equal(got["distance_s"], cdsp.prepare_item(item)["distance_s"])


def test_cache_key_holds_every_combined_method():
    def key(m):
        return experiment_key(EmbeddedConfig(), ScribbleVariant(), TrainConfig(), m)[0]
    base = Combined((BLPSeg(), URSS(random_walk="none")), keep=(None, ("entropy",)))
    keys = {key(base), key(BLPSeg()), key(Combined((BLPSeg(), URSS(random_walk="none")))),
            key(Combined((BLPSeg(), URSS(random_walk="none", entropy_weight=2.0)), keep=(None, ("entropy",)))),
            key(Combined((BLPSeg(sigma=3.0), URSS(random_walk="none")), keep=(None, ("entropy",)))),
            key(Combined((BLPSeg(), URSS(random_walk="none")), keep=(None, ("entropy",)), weights=(1.0, 0.5)))}
    assert len(keys) == 6
    assert key(base) == key(Combined([BLPSeg(), URSS(random_walk="none")], keep=[None, ["entropy"]]))


def test_a_combination_trains_caches_and_reloads(tiny_dataset, tmp_path, monkeypatch):
    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    combo = Combined((BLPSeg(), URSS(random_walk="none"), PottsGD(neighbourhood="grid")),
                     keep=(None, ("entropy",), ("potts",)))
    cfg = TrainConfig(width=4, epochs=1, batch_size=8, lr=1e-2)
    first = run_experiment(cfg_ds, ScribbleVariant(), cfg, combo, log=lambda *_: None, root=tmp_path)
    assert {"blpseg/seg", "urss/entropy", "pottsgd/potts"} <= set(first.history[-1])
    assert 0 <= first.metrics["miou"] <= 100
    again = run_experiment(cfg_ds, ScribbleVariant(), cfg, combo, log=lambda *_: None, root=tmp_path)
    assert again.cached and again.metrics == first.metrics
    assert type(first.load_model(combo)).__name__ == "BLPSegNet"
