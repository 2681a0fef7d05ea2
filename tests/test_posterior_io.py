"""Posterior.save / Posterior.load: exact HDF5 round trips, atomic writes, versioning."""

import os

import h5py
import numpy as np
import pytest
from test_posterior_fakes import FakeModel

import tengri.posterior.io as posterior_io
from tengri.posterior import Posterior

RNG = np.random.default_rng(0)


def map_like():
    return Posterior(None, {"c0": 2.0, "c1": -0.5, "psd_xi": RNG.normal(size=8)}, "map", 0.25,
                     diagnostics={"converged": True, "n_starts": 8, "best_loss": 12.25, "message": "ok",
                                  "grad_norm": None},
                     loss_history=RNG.normal(size=50))


def sampler_like():
    n = 600
    return Posterior(
        {"c0": RNG.normal(size=n), "c1": RNG.normal(size=n), "psd_xi": RNG.normal(size=(n, 8)),
         "n_leapfrog": RNG.integers(1, 30, size=n)},
        {"c0": 0.0, "c1": 0.1, "psd_xi": np.zeros(8), "n_leapfrog": 4.0}, "mcmc_nuts", 31.5,
        diagnostics={"acceptance_rate": np.float64(0.83), "divergences": np.int64(2),
                     "step_size": RNG.uniform(size=2), "adaptation": {"dense": False, "n_warmup": 500,
                                                                     "windows": [75, 25, 50]},
                     "flags": (True, False), "labels": ["chain0", "chain1"]},
        n_chains=2,
        eline_fluxes=RNG.uniform(size=(n, 3)), eline_names=["Hbeta", "[OIII]5007", "Halpha"],
        eline_wavelengths_aa=[4861.33, 5006.84, 6562.80],
    )


def vi_like():
    return Posterior({"c0": RNG.normal(size=(100,)), "c1": RNG.normal(size=100)}, {"c0": 0.0, "c1": 0.0},
                     "vi", 4.0,
                     diagnostics={"kl_energy": RNG.normal(size=8), "sample_mode": "nonlinear_resample"},
                     loss_history=RNG.normal(size=8))


def nss_like():
    return Posterior({"c0": RNG.normal(size=200), "c1": RNG.normal(size=200)}, {"c0": 0.0, "c1": 0.0},
                     "nss", 9.0, diagnostics={"n_likelihood_evals": 123456, "logz_live": -3.5e-3},
                     log_evidence=-42.125, log_evidence_err=0.0875)


def assert_same(a, b):
    """Exact equality of every stored member, types and dtypes included."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def assert_round_trip(post, path):
    post.save(path)
    loaded = Posterior.load(path)
    for member in ("samples", "params", "method", "wall_time_s", "diagnostics", "loss_history",
                   "log_evidence", "log_evidence_err", "eline_fluxes", "eline_names",
                   "eline_wavelengths_aa", "n_chains"):
        assert_same(getattr(post, member), getattr(loaded, member))
    return loaded


@pytest.mark.parametrize("make", [map_like, sampler_like, vi_like, nss_like])
def test_round_trip_is_exact(make, tmp_path):
    assert_round_trip(make(), tmp_path / "post.h5")


def test_loaded_sampler_keeps_its_chains(tmp_path):
    loaded = assert_round_trip(sampler_like(), tmp_path / "post.h5")
    assert loaded.n_chains == 2
    assert set(loaded.rhat()) == {"c0", "c1", "n_leapfrog"}


def test_load_attaches_the_model_but_not_a_fitter(tmp_path):
    path = tmp_path / "post.h5"
    map_like().save(path)
    loaded = Posterior.load(str(path), model=FakeModel())
    assert loaded.derived["stellar_mass"] == pytest.approx(1e10 * np.exp(1.0))
    assert loaded._fitter is None


def test_file_records_format_and_tengri_version(tmp_path):
    path = tmp_path / "post.h5"
    nss_like().save(path)
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 1
        assert f.attrs["tengri_version"] == __import__("tengri").__version__
        assert set(f) == {"samples", "params", "diagnostics"}


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def half_written(f, posterior):
        f.create_dataset("partial", data=np.zeros(10))
        raise OSError("disk full")

    monkeypatch.setattr(posterior_io, "_write_contents", half_written)
    with pytest.raises(OSError, match="disk full"):
        map_like().save(tmp_path / "post.h5")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "post.h5"
    nss_like().save(path)
    monkeypatch.setattr(posterior_io, "_write_contents", lambda f, p: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        map_like().save(path)
    assert Posterior.load(path).method == "nss"
    assert os.listdir(tmp_path) == ["post.h5"]


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "post.h5"
    map_like().save(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(ValueError, match="newer tengri"):
        Posterior.load(path)


def test_foreign_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=[1, 2])
    with pytest.raises(ValueError, match="not a tengri posterior"):
        Posterior.load(path)


def test_unstorable_diagnostic_is_named(tmp_path):
    post = Posterior(None, {"a": 1.0}, "map", 0.1, diagnostics={"callback": object()})
    with pytest.raises(TypeError, match="diagnostics/callback"):
        post.save(tmp_path / "post.h5")
    assert os.listdir(tmp_path) == []


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        map_like().save(tmp_path / "nowhere" / "post.h5")
