"""Test doubles for the Posterior tests, and checks that the doubles are what they claim.

``FakeModel`` stands in for ``SEDModel`` with analytic outputs: photometry linear in
two parameters (so the exact posterior under a flat prior is Gaussian and known),
a flat-L_λ rest-frame SED with Gaussian emission lines of known equivalent width,
an exponential SFH. ``FakeFitter`` stands in for ``Fitter``: data, noise, mask and a
``run`` that records its calls. Other ``test_posterior_*`` files import them.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import tengri  # noqa: F401  (x64)
from tengri.posterior import Posterior

C_AA_PER_S = 2.99792458e18
PIVOT_AA = 1e4
# Lines drawn into the fake SED: name → (rest wavelength [Å], EW per unit c0 [Å]).
SED_LINES = {"Hbeta": (4861.33, 5.0), "[OIII]5007": (5006.84, 8.0), "Halpha": (6562.80, 20.0)}
LINE_SIGMA_AA = 2.0


def _sed_wavelength_aa() -> np.ndarray:
    return np.unique(np.concatenate([np.geomspace(900.0, 6e4, 600), np.arange(4000.0, 8000.0, 0.5)]))


class FakeModel:
    """Photometry ``f_i = c0 + c1 · ln(λ_i / 1 μm)``; SED and SFH scale with c0."""

    def __init__(self, n_band: int = 12, observed_frame: bool = True, redshift: float = 1.0):
        self.observation = SimpleNamespace(effective_wavelength_aa=np.geomspace(2000.0, 4.5e4, n_band))
        self.design = np.stack(
            [np.ones(n_band), np.log(self.observation.effective_wavelength_aa / PIVOT_AA)], axis=1
        )
        self.observed_frame = observed_frame
        self.redshift = redshift
        self.calls = {"derived_quantities": 0}

    @staticmethod
    def _coefficients(values):
        return np.asarray(values["c0"], np.float64), np.asarray(values["c1"], np.float64)

    def predict_photometry(self, values):
        c0, c1 = self._coefficients(values)
        return c0[..., None] * self.design[:, 0] + c1[..., None] * self.design[:, 1]

    def derived_quantities(self, values, names=None):
        self.calls["derived_quantities"] += 1
        self.derived_names_asked = names
        c0, c1 = self._coefficients(values)
        out = {"stellar_mass": 1e10 * np.exp(c0 - 1.0), "sfr_100myr": np.exp(c1), "sfr_10myr": 2 * np.exp(c1)}
        return out if names is None else {n: out[n] for n in names}

    def line_profile(self, wave, c0):
        """Σ_lines EW_i(c0) · Gaussian(λ; λ_i, σ): L_λ/continuum − 1."""
        c0 = np.asarray(c0, np.float64)[..., None]
        profile = 0.0
        for center, ew_per_c0 in SED_LINES.values():
            norm = LINE_SIGMA_AA * np.sqrt(2 * np.pi)
            gauss = np.exp(-0.5 * ((wave - center) / LINE_SIGMA_AA) ** 2) / norm
            profile = profile + ew_per_c0 * c0 * gauss
        return profile

    def predict_sed(self, values):
        c0, _ = self._coefficients(values)
        wave = _sed_wavelength_aa()
        llam = np.abs(c0)[..., None] * (1.0 + self.line_profile(wave, c0))  # flat continuum
        lnu = llam * wave**2 / C_AA_PER_S
        out = {"wavelength_rest_aa": wave, "lnu_rest": lnu}
        if self.observed_frame:
            out["wavelength_obs_aa"] = wave * (1 + self.redshift)
            out["fnu_obs"] = 1e-3 * lnu
        return out

    def predict_sfh(self, values, lookback_gyr=None):
        c0, c1 = self._coefficients(values)
        lookback_gyr = np.linspace(0.0, 10.0, 60) if lookback_gyr is None else np.asarray(lookback_gyr)
        return lookback_gyr, np.abs(c0)[..., None] * np.exp(-lookback_gyr / (1.0 + np.abs(c1)[..., None]))

    def sed_components(self, values):
        sed = self.predict_sed(values)
        c0, _ = self._coefficients(values)
        continuum = np.abs(c0)[..., None] * sed["wavelength_rest_aa"] ** 2 / C_AA_PER_S
        return {"wavelength": sed["wavelength_rest_aa"], "sed_total": sed["lnu_rest"],
                "sed_nebular": sed["lnu_rest"] - continuum}

    def exact_posterior(self, data, noise):
        """Mean and covariance of (c0, c1) under a flat prior."""
        a = self.design / noise[:, None]
        cov = np.linalg.inv(a.T @ a)
        return cov @ a.T @ (data / noise), cov


class FakeFitter:
    """Data, noise and mask, and a ``run`` that records its calls and returns ``result(method, kwargs)``."""

    def __init__(self, data, noise, mask=None, result=None):
        self.data, self.noise, self.mask = np.asarray(data), np.asarray(noise), mask
        self._result = result
        self.calls = []

    def run(self, method, init_from=None, **kwargs):
        self.calls.append({"method": method, "init_from": init_from, **kwargs})
        return self._result(method, kwargs) if self._result is not None else None


def mock_photometry(model: FakeModel, truth=(2.0, -0.5), seed: int = 0):
    """(data, noise) drawn from the fake model at ``truth`` with 5% of c0 noise."""
    flux = model.predict_photometry({"c0": truth[0], "c1": truth[1]})
    noise = np.full(flux.shape, 0.05 * truth[0])
    return flux + noise * np.random.default_rng(seed).standard_normal(flux.shape), noise


def gaussian_posterior(model: FakeModel, data, noise, n_samples=4000, n_chains=1, seed=1, **extra):
    """A Posterior holding exact draws of the fake model's Gaussian posterior."""
    mean, cov = model.exact_posterior(data, noise)
    draws = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n_samples)
    return Posterior(
        {"c0": draws[:, 0], "c1": draws[:, 1]}, {"c0": mean[0], "c1": mean[1]}, "mcmc_nuts", 1.0,
        n_chains=n_chains, model=model, fitter=FakeFitter(data, noise), **extra,
    )


def test_fake_photometry_is_linear_in_its_parameters():
    model = FakeModel(n_band=5)
    a = model.predict_photometry({"c0": 1.0, "c1": 0.0})
    b = model.predict_photometry({"c0": 0.0, "c1": 1.0})
    both = model.predict_photometry({"c0": np.array([2.0]), "c1": np.array([3.0])})
    np.testing.assert_allclose(both[0], 2 * a + 3 * b)


def test_fake_exact_posterior_mean_is_least_squares_fit():
    model = FakeModel(n_band=30)
    data, noise = mock_photometry(model)
    mean, _ = model.exact_posterior(data, noise)
    expected = np.linalg.lstsq(model.design, data, rcond=None)[0]  # equal noise → OLS
    np.testing.assert_allclose(mean, expected, rtol=1e-10)
