"""Posterior figures: corner, SED and SFH render to PNG with labelled axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_posterior_fakes import FakeFitter, FakeModel, gaussian_posterior, mock_photometry  # noqa: E402

from tengri.posterior import Posterior  # noqa: E402
from tengri.posterior.plots import parameter_label  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def post():
    model = FakeModel()
    data, noise = mock_photometry(model)
    p = gaussian_posterior(model, data, noise, n_samples=2000)
    p.samples["age_gyr"] = np.random.default_rng(2).uniform(1, 3, 2000)
    p.samples["redshift"] = np.ones(2000)
    p.samples["psd_xi"] = np.zeros((2000, 4))
    return p


def render(fig, path):
    fig.savefig(path, dpi=40)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_corner_renders_free_and_derived_columns_with_units(post, tmp_path):
    fig = post.plot_corner()
    render(fig, tmp_path / "corner.png")
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert "age [Gyr]" in labels
    assert any("M$_\\odot$" in lab and "M_\\star" in lab for lab in labels)
    assert not any("redshift" in lab or "psd_xi" in lab for lab in labels)
    assert len(fig.axes) == 6**2  # c0, c1, age_gyr + three log10 derived quantities
    # only the plotted quantities are asked for (the model's SFH-only path), not all of them
    assert set(post._model.derived_names_asked) == {"stellar_mass", "sfr_100myr", "sfr_10myr"}


def test_corner_overlay_draws_on_the_same_figure_with_a_legend(post):
    fig = post.plot_corner(params=["c0", "c1"], label="NUTS")
    again = post.plot_corner(params=["c0", "c1"], fig=fig, color="C1", label="VI")
    assert again is fig and len(fig.axes) == 4
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["NUTS", "VI"]


def test_corner_accepts_axes_for_overlay(post):
    fig = post.plot_corner(params=["c0", "c1"])
    assert post.plot_corner(params=["c0", "c1"], axes=np.array(fig.axes)) is fig


def test_corner_marks_truths_with_dashed_lines(post):
    fig = post.plot_corner(params=["c0", "c1"], truths={"c0": 2.0, "c1": -0.5, "unused": 1.0})
    diagonal = fig.axes[0]
    assert any(line.get_linestyle() == "--" and line.get_xdata()[0] == 2.0 for line in diagonal.lines)


def test_corner_rejects_unknown_and_constant_parameters(post):
    with pytest.raises(ValueError, match="unknown parameter 'mass'"):
        post.plot_corner(params=["mass"])
    with pytest.raises(ValueError, match="constant"):
        post.plot_corner(params=["c0", "redshift"])


def test_corner_of_point_estimate_is_an_error():
    with pytest.raises(ValueError, match="point estimate"):
        Posterior(None, {"c0": 1.0}, "map", 0.1).plot_corner()


def test_sed_in_observed_frame_is_microjansky_against_micron(post, tmp_path):
    post._fitter.mask = np.arange(12) != 3
    fig = post.plot_sed(n_draws=50)
    render(fig, tmp_path / "sed.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == r"observed wavelength [$\mu$m]"
    assert ax.get_ylabel() == r"$f_\nu$ [$\mu$Jy]"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"observed", "masked", "model photometry", "model 16–84%"} <= set(texts)


def test_sed_photometry_is_drawn_in_microjansky_at_effective_wavelengths(post):
    ax = post.plot_sed(n_draws=20).axes[0]
    observed = next(c for c in ax.containers if c.get_label() == "observed")
    x, y = observed.lines[0].get_data()
    wave_um = post._model.observation.effective_wavelength_aa / 1e4
    assert np.allclose(x, wave_um) and np.allclose(y, post._fitter.data / 1e-29)


def test_sed_default_range_spans_the_filters(post):
    ax = post.plot_sed(n_draws=10).axes[0]
    wave_um = post._model.observation.effective_wavelength_aa / 1e4
    low, high = ax.get_xlim()
    assert low < wave_um.min() and high > wave_um.max() and high / low < 3.0 * wave_um.max() / wave_um.min()


def test_sed_draws_faint_data_as_upper_limits(post):
    post._fitter.data = post._fitter.data.copy()
    post._fitter.data[0] = -0.5 * post._fitter.noise[0]
    texts = [t.get_text() for t in post.plot_sed(n_draws=10).axes[0].get_legend().get_texts()]
    assert "observed (2σ upper limit)" in texts


def test_sed_reference_line_uses_the_given_parameters(post):
    ax = post.plot_sed(n_draws=10, truths={"c0": 4.0, "c1": 0.0}, truth_label="MAP").axes[0]
    line = next(line for line in ax.lines if line.get_label() == "MAP")
    assert line.get_linestyle() == "--"
    expected = post._model.predict_sed({"c0": 4.0, "c1": 0.0})["fnu_obs"] / 1e-29
    assert np.median(line.get_ydata()) == pytest.approx(np.median(expected[expected > 0]), rel=0.5)


def test_sed_in_rest_frame_is_normalised_at_5500_aa(post):
    fig = post.plot_sed(n_draws=20, frame="rest", wave_range=(3000, 9000))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "rest-frame wavelength [Å]"
    median = next(line for line in ax.lines if line.get_label() == "model median")
    x, y = median.get_data()
    assert np.interp(5500.0, x, y) == pytest.approx(1.0, rel=1e-6)


def test_sed_auto_falls_back_to_rest_frame_without_observed_keys():
    p = Posterior(None, {"c0": 2.0, "c1": 0.0}, "map", 0.1, model=FakeModel(observed_frame=False))
    assert p.plot_sed().axes[0].get_xlabel() == "rest-frame wavelength [Å]"
    with pytest.raises(ValueError, match="fnu_obs"):
        p.plot_sed(frame="observed")


def test_sed_warns_when_data_are_not_one_flux_per_filter():
    model = FakeModel(n_band=12)
    p = Posterior(None, {"c0": 2.0, "c1": 0.0}, "map", 0.1, model=model,
                  fitter=FakeFitter(np.ones(20), np.ones(20)))
    with pytest.warns(UserWarning, match="not drawn"):
        p.plot_sed()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_draws": 0}, "n_draws"), ({"wave_range": (5e4, 1e3)}, "wave_range"),
     ({"wave_range": (1e7, 2e7)}, "does not overlap"), ({"frame": "lab"}, "frame")],
)
def test_sed_rejects_bad_arguments(post, kwargs, match):
    with pytest.raises(ValueError, match=match):
        post.plot_sed(**kwargs)


def test_sed_needs_a_model():
    with pytest.raises(RuntimeError, match="forward model"):
        Posterior(None, {"c0": 1.0}, "map", 0.1).plot_sed()


def test_sfh_band_with_physical_axes(post, tmp_path):
    fig, ax = plt.subplots()
    assert post.plot_sfh(n_draws=40, ax=ax) is fig
    render(fig, tmp_path / "sfh.png")
    assert ax.get_xlabel() == "lookback time [Gyr]"
    assert ax.get_ylabel() == r"SFR [M$_\odot$ yr$^{-1}$]"
    assert len(ax.collections) == 1  # the 16–84% band


def test_sfh_reference_line_is_on_the_same_lookback_grid(post):
    ax = post.plot_sfh(n_draws=10, truths={"c0": 3.0, "c1": 1.0}, truth_label="truth").axes[0]
    line = next(line for line in ax.lines if line.get_label() == "truth")
    median = next(line for line in ax.lines if line.get_label() == "SFR median")
    assert np.array_equal(line.get_xdata(), median.get_xdata())
    assert line.get_ydata()[0] == pytest.approx(3.0)


def test_corner_truth_label_adds_a_legend_entry(post):
    fig = post.plot_corner(params=["c0", "c1"], truths={"c0": 2.0}, truth_label="MAP")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["MAP"]


def test_sfh_of_point_estimate_is_one_curve():
    p = Posterior(None, {"c0": 2.0, "c1": 0.0}, "map", 0.1, model=FakeModel())
    ax = p.plot_sfh().axes[0]
    assert len(ax.lines) == 1 and len(ax.collections) == 0


def test_labels_carry_units_from_name_suffixes():
    assert parameter_label("tau_myr") == "tau_myr [Myr]"
    assert parameter_label("sigma_kms") == "sigma_kms [km s$^{-1}$]"
    assert parameter_label("logzsol") == "logzsol"


def test_corner_leaves_out_a_derived_column_that_is_zero_in_some_draws(post):
    sfr = np.exp(post.samples["c1"])
    sfr[:10] = 0.0  # an SFH that has died away: log10 SFR = -inf
    post.__dict__["derived"] = {"stellar_mass": np.exp(post.samples["c0"]), "sfr_100myr": sfr, "sfr_10myr": 2 * sfr}
    with pytest.warns(UserWarning) as caught:
        fig = post.plot_corner()
    left_out = sorted(str(w.message).split()[1] for w in caught)
    assert left_out == ["log10_sfr_100myr", "log10_sfr_10myr"], [str(w.message) for w in caught]
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert not any("SFR" in lab for lab in labels)
    assert len(fig.axes) == 4**2  # c0, c1, age_gyr, log10 stellar mass
