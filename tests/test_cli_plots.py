"""`tengri fit --plots`: one corner, SED and SFH PNG per galaxy, written atomically."""

import pytest

from tengri.cli import main
from tengri.demo import demo_config_path, make_mock_catalog

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "mock.csv"
    make_mock_catalog(path, n_galaxies=1, snr=20.0, seed=3)
    return path


def fit(catalog, out, method, *options):
    argv = ["fit", str(catalog), "--config", str(demo_config_path()), "--method", method, "--out", str(out),
            "--quiet", "--plots"]
    for option in options:
        argv += ["--option", option]
    return main(argv)


@pytest.mark.slow
def test_plots_writes_corner_sed_and_sfh_per_galaxy(catalog, tmp_path):
    out = tmp_path / "out"
    assert fit(catalog, out, "laplace", "n_samples=300") == 0
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert names == ["mock000_corner.png", "mock000_sed.png", "mock000_sfh.png"]
    for path in (out / "plots").iterdir():
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size < 300_000


def test_plots_of_a_point_estimate_have_no_corner(catalog, tmp_path):
    out = tmp_path / "out"
    assert fit(catalog, out, "map") == 0
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert names == ["mock000_sed.png", "mock000_sfh.png"]


def test_without_plots_flag_no_plot_directory(catalog, tmp_path):
    out = tmp_path / "out"
    assert main(["fit", str(catalog), "--config", str(demo_config_path()), "--method", "map", "--out", str(out),
                 "--quiet", "--no-posteriors"]) == 0
    assert not (out / "plots").exists()


def test_failed_figure_leaves_no_partial_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from tengri.posterior import Posterior
    from tengri.posterior import plots

    class Broken(Figure):
        def savefig(self, fh, **kwargs):
            fh.write(PNG_MAGIC)
            raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_sed", lambda *a, **k: Broken())
    post = Posterior(None, {"c0": 1.0}, "map", 0.1)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_figures(post, tmp_path, "g1")
    assert list(tmp_path.iterdir()) == []
