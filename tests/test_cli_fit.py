"""`tengri fit` end to end on a small mock catalog, and its refusal of bad input."""

import csv

import numpy as np
import pytest

from tengri.cli import main
from tengri.demo import demo_config_path, make_mock_catalog
from tengri.fit_catalog import summary_columns


@pytest.fixture(scope="module")
def mock_catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "mock.csv"
    truths = make_mock_catalog(path, n_galaxies=3, snr=20.0, seed=7)
    return path, truths


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_fit_writes_summary_and_posteriors(mock_catalog, tmp_path):
    catalog, truths = mock_catalog
    out = tmp_path / "out"
    assert main(["fit", str(catalog), "--config", str(demo_config_path()), "--method", "map",
                 "--out", str(out), "--quiet"]) == 0
    rows = _rows(out / "summary.csv")
    assert [r["id"] for r in rows] == ["mock000", "mock001", "mock002"]
    from tengri.model.config import model_from_config

    free = model_from_config(demo_config_path())[0].parameters.free_names
    assert list(rows[0]) == summary_columns(free)
    for row, truth in zip(rows, truths):
        assert abs(float(row["stellar_mass_p50"]) - truth["stellar_mass"]) < 0.3
        assert float(row["log_mstar_p50"]) < truth["stellar_mass"]  # surviving < formed
    assert sorted(p.name for p in (out / "posteriors").iterdir()) == ["mock000.h5", "mock001.h5", "mock002.h5"]


def test_missing_column_fails_before_writing(mock_catalog, tmp_path):
    catalog, _ = mock_catalog
    lines = catalog.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("sdss_r0_err")
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(",".join(c for j, c in enumerate(l.split(",")) if j != drop) for l in lines))
    out = tmp_path / "out"
    assert main(["fit", str(broken), "--config", str(demo_config_path()), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_unknown_method_fails_before_writing(mock_catalog, tmp_path, capsys):
    catalog, _ = mock_catalog
    out = tmp_path / "out"
    assert main(["fit", str(catalog), "--config", str(demo_config_path()), "--method", "gibbs",
                 "--out", str(out), "--quiet"]) == 2
    assert "valid methods" in capsys.readouterr().err
    assert not out.exists()


def test_bad_prior_in_config_fails_before_writing(mock_catalog, tmp_path, capsys):
    catalog, _ = mock_catalog
    text = demo_config_path().read_text().replace("low = 8.0\nhigh = 12.5", "low = 12.5\nhigh = 8.0")
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["fit", str(catalog), "--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "stellar_mass" in capsys.readouterr().err
    assert not out.exists()


def test_missing_values_are_masked(mock_catalog, tmp_path):
    catalog, _ = mock_catalog
    lines = catalog.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("galex_FUV")] = "-99"
    cells[header.index("galex_NUV")] = "nan"
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join([lines[0], ",".join(cells)] + lines[2:]))
    from tengri.catalog_io import read_catalog
    from tengri.model.config import model_from_config

    _, spec = model_from_config(demo_config_path())
    gal = read_catalog(edited, spec)[0]
    assert not gal.mask[0] and not gal.mask[1] and gal.mask[2:].all()
    assert np.isfinite(gal.flux_obs).all()
