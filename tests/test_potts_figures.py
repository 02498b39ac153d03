"""Fig. 1 / Fig. 2 helpers of scribbleseg.potts.figures: the Sec. 2.1 numbers along the moves, the
K = 2 potentials and their logit slopes, and the figures' panels."""
import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scribbleseg.potts.relaxations import LOG_FORMS, NAMES  # noqa: E402
from scribbleseg.potts import figures  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_move_profiles_give_the_papers_numbers():
    at = figures.move_profiles([0.0, 0.5, 1.0])
    np.testing.assert_allclose(at["a"]["BL"], [0, 0.5, 0], atol=1e-12)    # P_BL(y') = 1/2 > 0
    np.testing.assert_allclose(at["a"]["Q"], [0, 0, 0], atol=1e-12)       # P_Q zero along (a)
    np.testing.assert_allclose(at["b"]["Q"], [1, 0.75, 1], atol=1e-12)    # P_Q(y_i, y'_j) = 3/4 < 1
    np.testing.assert_allclose(at["b"]["BL"], [1, 1, 1], atol=1e-12)      # P_BL constant on (b)
    assert at["a"]["CCE"][1] == pytest.approx(math.log(2), abs=1e-5)      # -ln(1/4 + 1/4)
    assert at["b"]["LQ"][1] == pytest.approx(math.log(4), abs=1e-5)       # -ln(1 - 3/4)


def test_move_profiles_shape_and_names():
    t = np.linspace(0, 1, 11)
    prof = figures.move_profiles(t, names=("BL", "NQ"))
    assert set(prof) == {"a", "b"} and set(prof["a"]) == {"BL", "NQ"}
    assert prof["b"]["NQ"].shape == t.shape


def test_nq_has_no_barrier_and_bl_q_do():
    prof = figures.move_profiles(np.linspace(0, 1, 41))
    for move in "ab":
        assert figures.bump_and_well(prof[move]["NQ"]) == (0.0, 0.0)
        assert figures.is_monotone(prof[move]["NQ"])
    assert figures.bump_and_well(prof["a"]["BL"]) == pytest.approx((0.5, 0.0))
    assert figures.bump_and_well(prof["b"]["Q"]) == pytest.approx((0.0, 0.25))
    assert not figures.is_monotone(prof["a"]["BL"]) and not figures.is_monotone(prof["b"]["Q"])


def test_bump_and_well_on_simple_profiles():
    assert figures.bump_and_well(np.array([0.0, 1.0, 0.5])) == (0.5, 0.0)
    assert figures.bump_and_well(np.array([1.0, 0.2, 0.5])) == pytest.approx((0.0, 0.3))
    assert figures.bump_and_well(np.linspace(0, 1, 5)) == (0.0, 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_binary_potential_corners_and_symmetry(name):
    assert figures.binary_potential(1.0, 1.0, name) == pytest.approx(0, abs=1e-5)
    assert figures.binary_potential(0.0, 0.0, name) == pytest.approx(0, abs=1e-5)
    diff = figures.binary_potential(1.0, 0.0, name)
    assert diff == pytest.approx(1 if name not in LOG_FORMS else -math.log(1e-6), rel=1e-4)
    x = np.linspace(0, 1, 7)
    z = figures.binary_potential(x[:, None], x[None, :], name)
    assert z.shape == (7, 7)
    np.testing.assert_allclose(z, z.T, atol=1e-12)


def test_logit_to_x():
    assert figures.logit_to_x(0.0) == 0.5
    assert figures.logit_to_x(1.0) == pytest.approx(1 / (1 + math.exp(-2)))


@pytest.mark.parametrize("log_name,plain", LOG_FORMS.items())
def test_log_forms_keep_their_gradient_at_discordant_corners(log_name, plain):
    # P_BL at (l, -l): dP/dl_i = (1 - 2 x_j) * 2 x_i (1 - x_i) -> 2 e^{-2l}; the log forms' slope -> 1
    assert figures.discordant_slope(plain, 3.0) < 0.011
    assert figures.discordant_slope(log_name, 3.0) > 0.99
    assert figures.discordant_slope(log_name, 1.0) >= figures.discordant_slope(plain, 1.0)


def test_discordant_slope_bl_closed_form():
    x = 1 / (1 + math.exp(-6))
    assert figures.discordant_slope("BL", 3.0) == pytest.approx((2 * x - 1) * 2 * x * (1 - x))


def test_figures_have_one_panel_per_relaxation():
    assert len(figures.potential_contours(NAMES, n=11).axes) == 6
    assert len(figures.potential_contours(("BL", "Q"), n=11).axes) == 2
    surf = figures.potential_surfaces(NAMES, extent=2.0, n=9)
    assert len(surf.axes) == 6 and all(ax.name == "3d" for ax in surf.axes)
    assert len(figures.simplex_moves().axes) == 2
    prof = figures.move_profile_figure(n=11)
    assert len(prof.axes) == 2 and len(prof.axes[0].lines) == len(NAMES)
    assert "clipped" in prof.axes[0].get_ylabel()
