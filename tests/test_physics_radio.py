"""Synchrotron and free–free radio continuum (tengri.physics.radio)."""

import numpy as np

from tengri.physics import radio

C_AA_PER_S = 2.99792458e18
WAVE_1P4GHZ_AA = C_AA_PER_S / 1.4e9


def test_q_ir_definition_and_spectral_index():
    l_ir = 1e45
    l14 = float(radio.synchrotron_lnu_1p4ghz_erg_s_hz(l_ir, 2.64))
    np.testing.assert_allclose(np.log10(l_ir / 3.75e12) - np.log10(l14), 2.64)
    wave = np.array([WAVE_1P4GHZ_AA, 2 * WAVE_1P4GHZ_AA, 5e5])
    lnu = np.asarray(radio.synchrotron_lnu(l14, 0.8, wave))
    np.testing.assert_allclose(lnu[0], l14)
    np.testing.assert_allclose(lnu[1] / lnu[0], 2.0**0.8)  # ν halves → L_ν × 2^α
    assert lnu[2] == 0.0  # nothing shortward of 100 µm


def test_free_free_murphy2011_normalisation():
    wave = np.geomspace(1e8, 1e11, 500)
    per_q = np.asarray(radio.free_free_lnu_per_ionising_photon_rate(1e4, wave, 1e8))
    i = np.argmin(np.abs(wave - C_AA_PER_S / 1e9))  # ~1 GHz
    nu_ghz = C_AA_PER_S / wave[i] / 1e9
    np.testing.assert_allclose(per_q[i] * 6.3e25 * nu_ghz**0.1, 1.0, rtol=1e-4)  # exp(-hν/kT) ≈ 1
    assert per_q[0] < per_q[1]  # the bin holding 1e8 Å counts only its longward half


def test_ionising_photon_weights_count_photons():
    wave = np.geomspace(100.0, 2000.0, 20_000)
    dlnlam = np.gradient(np.log(wave))
    lnu = np.full_like(wave, 1e20)  # flat L_ν: Q = L_ν ln(λ_912 / λ_min) / h
    q = float(np.sum(lnu * np.asarray(radio.ionising_photon_weights(wave, dlnlam))))
    np.testing.assert_allclose(q, 1e20 * np.log(912.0 / 100.0) / 6.62607015e-27, rtol=1e-3)
