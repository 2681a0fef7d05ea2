"""Attenuation curves A_λ/A_V: published values, BAGPIPES parity, birth clouds, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (enables float64)
from tengri.errors import ParameterError
from tengri.params import Prior
from tengri.physics.attenuation import (
    ATTENUATION_CURVES,
    attenuation_curve,
    calzetti2000,
    cardelli1989,
    charlot_fall2000,
    drude_bump,
    dust_transmission_per_age,
    kriek_conroy2013,
    salim2018,
    smc_gordon2003,
)

H_ALPHA_AA, H_BETA_AA = 6562.8, 4861.3
WAVE_AA = np.geomspace(500.0, 6e4, 3000)


def test_calzetti_k_at_v_and_balmer_lines_matches_calzetti_2000():
    # k = R_V A_λ/A_V from eq. 4: k(V) ≈ R_V = 4.05, k(Hα) = 3.33, k(Hβ) = 4.60
    k = np.asarray(calzetti2000(jnp.array([5500.0, H_ALPHA_AA, H_BETA_AA]))) * 4.05
    np.testing.assert_allclose(k, [4.05, 3.33, 4.60], atol=5e-3)


def test_calzetti_uv_branch_is_equation_4():
    lam_um = 0.15
    k = 2.659 * (-2.156 + 1.509 / lam_um - 0.198 / lam_um**2 + 0.011 / lam_um**3) + 4.05
    assert float(calzetti2000(1500.0)) == pytest.approx(k / 4.05, rel=1e-14)


def test_calzetti_is_zero_beyond_3_1_micron_and_a_power_law_below_1200_aa():
    assert float(calzetti2000(35000.0)) == 0.0
    ratio = float(calzetti2000(600.0) / calzetti2000(1199.999999))
    assert ratio == pytest.approx((600.0 / 1200.0) ** -0.77, rel=1e-6)


def test_cardelli_is_one_at_v_and_matches_published_balmer_values():
    assert float(cardelli1989(1e4 / 1.82)) == pytest.approx(1.0, abs=1e-14)
    k = np.asarray(cardelli1989(jnp.array([H_ALPHA_AA, H_BETA_AA]))) * 3.1
    np.testing.assert_allclose(k, [2.53, 3.61], atol=5e-3)


def test_smc_and_power_law_are_one_at_5500_aa():
    assert float(smc_gordon2003(5500.0)) == pytest.approx(1.0, abs=1e-14)
    assert float(charlot_fall2000(5500.0, 1.3)) == pytest.approx(1.0, abs=1e-14)


def test_power_law_slope_is_minus_n():
    assert float(charlot_fall2000(2750.0, 0.7)) == pytest.approx(2.0**0.7, rel=1e-14)


def test_salim_without_tilt_or_bump_is_calzetti():
    np.testing.assert_allclose(np.asarray(salim2018(WAVE_AA, 0.0, 0.0)), np.asarray(calzetti2000(WAVE_AA)), rtol=1e-14)


def test_kriek_conroy_ties_the_bump_to_the_slope():
    delta = -0.2
    expected = (calzetti2000(WAVE_AA) * 4.05 + drude_bump(WAVE_AA, 0.85 - 1.9 * delta)) / 4.05 * (
        WAVE_AA / 5500.0
    ) ** delta
    np.testing.assert_allclose(np.asarray(kriek_conroy2013(WAVE_AA, delta)), np.asarray(expected), rtol=1e-14)
    # at δ = 0.85/1.9 the bump vanishes
    no_bump = kriek_conroy2013(WAVE_AA, 0.85 / 1.9)
    np.testing.assert_allclose(
        np.asarray(no_bump), np.asarray(calzetti2000(WAVE_AA) * (WAVE_AA / 5500.0) ** (0.85 / 1.9)), rtol=1e-12
    )


def test_drude_bump_peaks_at_2175_aa_with_amplitude_e_b():
    lam = np.linspace(1800.0, 2600.0, 8001)
    bump = np.asarray(drude_bump(lam, 2.0))
    assert lam[np.argmax(bump)] == pytest.approx(2175.0, abs=1.0)
    assert float(drude_bump(2175.0, 2.0)) == pytest.approx(2.0, rel=1e-14)


def test_steeper_slope_raises_uv_attenuation():
    assert float(salim2018(1500.0, -0.5, 0.0)) > float(salim2018(1500.0, 0.0, 0.0)) > float(salim2018(1500.0, 0.3, 0.0))


def test_registry_lists_curves_with_their_parameters_and_priors():
    assert set(ATTENUATION_CURVES) == {"calzetti", "cardelli", "smc", "kriek_conroy", "salim", "cf00"}
    assert ATTENUATION_CURVES["salim"].param_names == ("dust_delta", "dust_bump")
    for curve in ATTENUATION_CURVES.values():
        assert set(curve.default_priors) == set(curve.param_names)
        assert all(isinstance(p, Prior) for p in curve.default_priors.values())


def test_registered_curves_are_called_with_their_parameters_by_name():
    np.testing.assert_allclose(
        np.asarray(ATTENUATION_CURVES["cf00"](WAVE_AA, dust_n=0.7)), np.asarray(charlot_fall2000(WAVE_AA, 0.7))
    )
    with pytest.raises(ParameterError, match="takes dust_n; missing dust_n"):
        ATTENUATION_CURVES["cf00"](WAVE_AA)
    with pytest.raises(ParameterError, match="unknown dust_n"):
        ATTENUATION_CURVES["calzetti"](WAVE_AA, dust_n=0.7)


def test_unknown_curve_is_a_parameter_error_listing_valid_names():
    with pytest.raises(ParameterError, match="valid curves: calzetti, cardelli, smc"):
        attenuation_curve("milky_way")


def test_birth_cloud_stars_see_eta_times_av_and_older_stars_av():
    ages = jnp.array([1e6, 5e6, 2e7, 1e9])
    av, eta = 0.6, 2.5
    t = dust_transmission_per_age(WAVE_AA, ages, av, "calzetti", eta, t_bc_yr=1e7)
    k = np.asarray(calzetti2000(WAVE_AA))
    magnitudes = -2.5 * np.log10(np.asarray(t))
    np.testing.assert_allclose(magnitudes[:2], np.broadcast_to(eta * av * k, (2, k.size)), atol=1e-12)
    np.testing.assert_allclose(magnitudes[2:], np.broadcast_to(av * k, (2, k.size)), atol=1e-12)


def test_eta_of_one_attenuates_all_ages_alike():
    t = dust_transmission_per_age(WAVE_AA, jnp.array([1e6, 1e9]), 1.0, "smc", 1.0)
    np.testing.assert_allclose(np.asarray(t[0]), np.asarray(t[1]), rtol=1e-15)


def test_bin_holding_t_bc_is_split_by_its_time_fraction():
    edges = jnp.array([0.0, 4e6, 1.6e7, 1e8])  # t_bc = 1e7 lies half-way through bin 1
    av, eta = 1.0, 3.0
    t = dust_transmission_per_age(
        WAVE_AA, jnp.array([2e6, 8e6, 5e7]), av, "calzetti", eta, 1e7, age_bin_edges_yr=edges
    )
    k = np.asarray(calzetti2000(WAVE_AA))
    young, old = 10 ** (-0.4 * eta * av * k), 10 ** (-0.4 * av * k)
    np.testing.assert_allclose(np.asarray(t[1]), 0.5 * young + 0.5 * old, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(t[0]), young, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(t[2]), old, rtol=1e-12)


def test_precomputed_curve_array_is_accepted():
    k = calzetti2000(WAVE_AA)
    by_name = dust_transmission_per_age(WAVE_AA, jnp.array([1e6, 1e9]), 0.4, "calzetti", 2.0)
    by_array = dust_transmission_per_age(WAVE_AA, jnp.array([1e6, 1e9]), 0.4, k, 2.0)
    np.testing.assert_allclose(np.asarray(by_array), np.asarray(by_name), rtol=1e-15)


def test_transmission_gradients_match_finite_differences():
    ages = jnp.array([1e6, 3e7, 1e9])

    @jax.jit
    def total(av, eta, delta, bump):
        t = dust_transmission_per_age(
            WAVE_AA, ages, av, "salim", eta, curve_params={"dust_delta": delta, "dust_bump": bump}
        )
        return jnp.sum(t)

    args = [0.7, 1.8, -0.3, 1.2]
    grads = jax.grad(total, argnums=(0, 1, 2, 3))(*args)
    for i, h in enumerate([1e-6] * 4):
        up, down = list(args), list(args)
        up[i] += h
        down[i] -= h
        fd = (total(*up) - total(*down)) / (2 * h)
        assert float(grads[i]) == pytest.approx(float(fd), rel=1e-6)


# --- BAGPIPES parity ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bagpipes():
    import bagpipes  # a dependency of tengri; slow to import, so only here

    return bagpipes


@pytest.mark.bagpipes
@pytest.mark.parametrize(
    "bagpipes_type, bagpipes_params, ours",
    [
        ("Calzetti", {}, lambda w: calzetti2000(w)),
        ("Cardelli", {}, lambda w: cardelli1989(w)),
        ("SMC", {}, lambda w: smc_gordon2003(w)),
        ("Salim", {"delta": -0.4, "B": 1.5}, lambda w: salim2018(w, -0.4, 1.5)),
        ("Salim", {"delta": 0.2, "B": 0.0}, lambda w: salim2018(w, 0.2, 0.0)),
        ("CF00", {"n": 0.7}, lambda w: charlot_fall2000(w, 0.7)),
    ],
)
def test_curves_match_bagpipes_dust_attenuation_model(bagpipes, bagpipes_type, bagpipes_params, ours):
    reference = bagpipes.models.dust_attenuation(WAVE_AA, dict(type=bagpipes_type, Av=1.0, **bagpipes_params))
    np.testing.assert_allclose(np.asarray(ours(WAVE_AA)), reference.A_cont, rtol=1e-12, atol=1e-14)
