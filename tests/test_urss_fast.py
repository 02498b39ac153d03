"""URSS's fast training path (issue 15) against the formulation it replaces, in float64: the fused random walk
(Eq. 5-6 by scaled_dot_product_attention, no P) against walk(transition_matrix), the factored eigenspace losses
(Eq. 9 and the released loss on selected factors, one image at a time) against soft / released_eigenspace_loss of
the indexed (N, M, M) energies (paired, Eq. 10), and a whole training step against the old one."""
import contextlib
import dataclasses
import math

import pytest
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.models.small import SmallSegNet
from scribbleseg.urss.method import URSS, grid_stride
from scribbleseg.urss.random_walk import PositionAttention, RandomWalk, fused_walk, transition_matrix, walk
from scribbleseg.urss.self_supervision import (factored_eigenspace_loss, paired, paired_factors,
                                               released_eigenspace_loss, soft_eigenspace_loss)
from scribbleseg.urss.transforms import Transform, random_transform

D = torch.float64
PHIS = [Transform("flip"), Transform("translate", 2, 0), Transform("translate", 0, -1), Transform("crop", 2),
        Transform("crop", -1)]


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape and (a - b).abs().max().item() < tol, (a - b).abs().max().item()


def _grads(value, inputs):
    return torch.autograd.grad(value, inputs, allow_unused=True, retain_graph=True)


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_fused_walk_equals_the_explicit_walk(scale):
    torch.manual_seed(0)
    f = (scale * torch.randn(3, 5, 4, 6, dtype=D)).requires_grad_()
    alpha = torch.tensor(0.7, dtype=D, requires_grad=True)
    new, old = fused_walk(f, alpha), walk(f, transition_matrix(f)[0], alpha)
    _close(new, old, 1e-12)
    g = torch.randn_like(new)
    for a, b in zip(_grads((new * g).sum(), (f, alpha)), _grads((old * g).sum(), (f, alpha))):
        _close(a, b, 1e-12)
    small = f[:1, :3, :2, :3].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fused_walk, (small, alpha))


@pytest.mark.parametrize("key_dim", [16, 12, 8, 4])  # v padded, equal, q and k padded, no padding (ratio 3)
def test_modules_without_matrices_equal_the_explicit_form(key_dim):
    torch.manual_seed(1)
    x = torch.randn(2, 12, 3, 5, dtype=D, requires_grad=True)
    for module in (RandomWalk(0.4).double(), PositionAttention(12, key_dim).double()):
        if isinstance(module, PositionAttention):
            with torch.no_grad():
                module.gamma.fill_(0.8)
        fast, full = module.outputs(x), module.outputs(x, matrices=True)
        assert "transition" not in fast and full["transition"].shape == (2, 15, 15)
        _close(fast["features"], full["features"], 1e-12)
        e = torch.bmm(fast["query"], fast.get("key", fast["query"]).transpose(1, 2))  # E = q k^T (k is q: walk)
        _close(e, full["energy"], 1e-12)
        params = (x, *module.parameters())
        grads = [_grads(o["features"].square().sum(), params) for o in (fast, full)]
        for a, b in zip(*grads):
            _close(a, b, 1e-10)
        walk = isinstance(module, RandomWalk)
        assert set(module.outputs(x, features=False)) == ({"query"} if walk else {"query", "key"})


def _old_loss(e_x, e_t, phi, h, w, loss, gamma):
    a, b = paired(phi, e_x, e_t, h, w)                                               # (10) by indexing (N, M, M)
    if loss == "released":
        return released_eigenspace_loss(a, b)
    return soft_eigenspace_loss(torch.log_softmax(a, -1), torch.log_softmax(b, -1), gamma)


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("loss", ["paper", "released"])
@pytest.mark.parametrize("shared", [True, False])    # q is k (the paper's walk) or not (the released attention)
@pytest.mark.parametrize("detach", [False, True])
def test_factored_losses_equal_the_indexed_energies(phi, loss, shared, detach):
    torch.manual_seed(2)
    h, w, d = 5, 4, 3
    th, tw = phi.target_shape(h, w)
    leaves = [torch.randn(2, n, d, dtype=D, requires_grad=True) for n in (h * w, h * w, th * tw, th * tw)]
    qx, kx, qt, kt = leaves
    kx, kt = (qx, qt) if shared else (kx, kt)
    if detach:
        qt, kt = qt.detach(), kt.detach()
    e_x, e_t = torch.bmm(qx, kx.transpose(1, 2)), torch.bmm(qt, kt.transpose(1, 2))  # (N, M, M), (N, M', M')
    old = _old_loss(e_x, e_t, phi, h, w, loss, 0.3)
    a, b = paired_factors(phi, (qx, kx), (qt, kt), h, w)
    new = factored_eigenspace_loss(a, b, 0.3, loss)
    _close(new, old, 1e-12)
    for g_new, g_old in zip(_grads(new, leaves), _grads(old, leaves)):
        assert (g_new is None) == (g_old is None)
        if g_new is not None:
            _close(g_new, g_old, 1e-12)


def test_factored_losses_gradcheck():
    torch.manual_seed(3)
    f, h, k1, k2 = (torch.randn(2, 6, 3, dtype=D, requires_grad=True) for _ in range(4))
    for loss in ("paper", "released"):
        assert torch.autograd.gradcheck(lambda a, b: factored_eigenspace_loss((a, a), (b, b), 0.5, loss), (f, h))
        assert torch.autograd.gradcheck(
            lambda *t: factored_eigenspace_loss((t[0], t[1]), (t[2], t[3]), 0.5, loss), (f, k1, h, k2))


def test_factored_loss_hand_computed():
    """E_a = q k^T = [[0, 0], [ln 3, 0]]: rows a = (1/2, 1/2), (3/4, 1/4), tr a = 3/4; E_b = 0: b = 1/2 everywhere,
    tr b = 1. KL of the rows: 0 and 3/4 ln(3/2) + 1/4 ln(1/2), mean over the 2 rows; trace term gamma (1/4)^2."""
    q = torch.eye(2, dtype=D)[None]
    k = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]], dtype=D)                   # q k^T = k^T
    zero = torch.zeros(1, 2, 2, dtype=D)
    kl = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert factored_eigenspace_loss((q, k), (zero, zero), 0.3).item() == pytest.approx(kl + 0.3 / 16, rel=1e-12)
    # released: column softmax of E_a = [[1/4, 1/2], [3/4, 1/2]] (tr 3/4), of E_b = 1/2; KL(S_b || S_a) element mean
    rel = 30 * (math.log(4 / 3) / 8 + 1e-2 * 0.25)
    assert factored_eigenspace_loss((q, k), (zero, zero), loss="released").item() == pytest.approx(rel, rel=1e-12)


@pytest.mark.parametrize("scale", [30.0, 1e3])
def test_factored_losses_follow_the_indexed_ones_on_peaked_softmaxes(scale):
    """Large energies: most of a and b underflow to 0 (the released loss's teacher too, with a gradient). The
    factored form takes the KL as sum a (E_a - E_b) - lse_a + lse_b: rounding of energies of size scale^2 times
    factors of size scale, where the indexed form's log-softmaxes give exact zeros."""
    torch.manual_seed(4)
    f, g = ((scale * torch.randn(2, 12, 4, dtype=D)).requires_grad_() for _ in range(2))
    phi = Transform("flip")
    e_f, e_g = torch.bmm(f, f.transpose(1, 2)), torch.bmm(g, g.transpose(1, 2))
    for loss in ("paper", "released"):
        old, new = _old_loss(e_f, e_g, phi, 3, 4, loss, 0.01), factored_eigenspace_loss(*paired_factors(
            phi, (f, f), (g, g), 3, 4), 0.01, loss)
        assert torch.isfinite(new) and abs(new.item() - old.item()) <= 1e-9 * max(1.0, abs(old.item()))
        for a, b in zip(_grads(new, (f, g)), _grads(old, (f, g))):
            assert torch.isfinite(a).all() and (a - b).abs().max().item() <= 1e-13 * scale ** 3


def _batch(n=2, size=32, step=0):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, size, size, generator=g) * 255
    scribble = torch.full((n, size, size), IGNORE_INDEX)
    scribble[:, 4:8, 4:20], scribble[:, 20:24, 8:12] = 1, 0
    return {"image": ((rgb / 255 - 0.45) / 0.25).double(), "rgb": rgb, "scribble": scribble, "step": step,
            "boundary": torch.zeros(n, size, size, dtype=torch.bool)}


def _old_losses(method: URSS, model, batch: dict) -> dict:
    """The training step as it was: the network builds P and E (N, M, M), the t(x) pass runs the whole network,
    (10) indexes the energies, (9) / the released loss take them whole."""
    out = model(batch["image"], matrices=True)
    terms = dataclasses.replace(method, self_supervision=None).losses(lambda x: out, batch)  # ce + entropy
    x, (h, w) = batch["image"], out["logits"].shape[-2:]
    phi = random_transform(batch["step"], h, w, method.transform, method.max_shift, method.translation)
    with torch.no_grad() if method.detach_teacher else contextlib.nullcontext():
        out_t = model(phi.image(x, grid_stride(model, x.shape[-2:], (h, w))), matrices=True)
    e_x = out["energy"] if "energy" in out else transition_matrix(out["features_in"])[1]
    e_t = out_t["energy"] if "energy" in out_t else transition_matrix(out_t["features_in"])[1]
    terms["ss"] = method.ss_weight * _old_loss(e_x, e_t, phi, h, w, method.ss_loss, method.gamma)
    return terms


@pytest.mark.parametrize("method", [
    URSS(self_supervision="eigenspace", transform="flip"),
    URSS(self_supervision="eigenspace", transform="translate", gamma=0.5),
    URSS(self_supervision="eigenspace", transform="translate", translation="crop", detach_teacher=True),
    URSS(self_supervision="eigenspace", transform="flip", random_walk="none"),
    URSS(self_supervision="eigenspace", transform="flip", random_walk="attention", key_dim=16),
    URSS.released(self_supervision="eigenspace", key_dim=16),
    URSS.released(self_supervision="eigenspace", transform="translate", detach_teacher=False, key_dim=8),
    URSS(self_supervision="eigenspace", transform="flip", ss_loss="released", alpha=0.5),
])
def test_training_step_equals_the_old_formulation(method):
    torch.manual_seed(0)
    model = method.wrap(SmallSegNet(3, width=4), 3).double().train()
    if method.random_walk == "attention":
        with torch.no_grad():
            model.walk.gamma.fill_(0.5)
    for step in (0, 3):
        batch = _batch(step=step)
        params = list(model.parameters())
        new, old = method.losses(model, batch), _old_losses(method, model, batch)
        assert new.keys() == old.keys() == {"ce", "entropy", "ss"}
        for k in new:
            _close(new[k], old[k], 1e-10)
        for a, b in zip(_grads(sum(new.values()), params), _grads(sum(old.values()), params)):
            assert (a is None) == (b is None)
            if a is not None:
                _close(a, b, 1e-10)


def test_training_saves_no_position_by_position_matrix():
    """Neither the walk nor the self-supervision keeps an (N, M, M) tensor for the backward (M = 64 here)."""
    method = URSS(self_supervision="eigenspace", transform="flip")
    torch.manual_seed(0)
    model = method.wrap(SmallSegNet(3, width=4), 3).train()
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        sum(method.losses(model, {**_batch(), "image": _batch()["image"].float()}).values())
    assert (2, 64, 12) in shapes and not [s for s in shapes if s[-2:] == (64, 64)]   # factors, no (., M, M)
    out = model(_batch()["image"].float(), until="factors")
    assert set(out) == {"features_in", "query"} and "logits" in model(_batch()["image"].float())
    with pytest.raises(ValueError, match="until"):
        model(_batch()["image"].float(), until="energy")
