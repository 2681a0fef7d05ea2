"""`tengri fit` with a spectrum file per galaxy (issue 5, item 5): the reader, the
``[spectroscopy]`` configuration, error rows for bad files, and (full) joint fits of
mock spectra made by the model itself, in f_λ and f_ν files."""

import csv

import numpy as np
import pytest

from conftest import require_real_data
from tengri.cli import main
from tengri.errors import ConfigError, DataError, ParameterError
from tengri.spectrum_io import read_spectrum

C_AA_S = 2.99792458e18
FILTERS = ["sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0"]
REDSHIFT = 0.2
WAVE_AA = np.linspace(5000.0, 7000.0, 200)
TRUTHS = [{"stellar_mass": 10.3, "age_gyr": 2.0, "av": 0.3}, {"stellar_mass": 10.9, "age_gyr": 3.0, "av": 0.6}]
FIXED = {"redshift": REDSHIFT, "tau_gyr": 1.0, "metallicity": 1.0, "dust_eta": 1.0, "veldisp_kms": 150.0}
CONFIG = f"""
[model]
sfh = "delayed"
dust = "calzetti"
nebular = false
igm = "none"
cosmology = {{ h0 = 70.0, om0 = 0.3 }}

[data]
flux_unit = "uJy"
filters = {FILTERS!r}

[params.redshift]
column = "redshift"
[params.stellar_mass]
prior = "uniform"
low = 9.0
high = 12.0
[params.age_gyr]
prior = "uniform"
low = 0.5
high = 5.0
[params.av]
prior = "uniform"
low = 0.0
high = 1.5
[params.veldisp_kms]
prior = "uniform"
low = 50.0
high = 300.0
[params.tau_gyr]
fixed = 1.0
[params.metallicity]
fixed = 1.0
[params.dust_eta]
fixed = 1.0

[spectroscopy]
column = "spectrum_file"
flux_unit = "{{flux_unit}}"
resolution = 1000.0
calibration_marginalize = true
cal_n_poly = 2
"""


def _config(tmp_path, flux_unit="flam"):
    path = tmp_path / f"model_{flux_unit}.toml"
    path.write_text(CONFIG.replace("{flux_unit}", flux_unit))
    return path


def _write_csv(path, columns: dict):
    names = list(columns)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        writer.writerows(zip(*(columns[n] for n in names)))
    return path


def _write_fits(path, columns: dict, units=None, vector_row=True):
    """A binary table: one row of vectors (the VANDELS layout) or one pixel per row."""
    from astropy.table import Table

    data = {k: [np.asarray(v)] if vector_row else np.asarray(v) for k, v in columns.items()}
    table = Table(data)
    for name, unit in (units or {}).items():
        table[name].unit = unit
    table.write(path, format="fits", overwrite=True)
    return path


def _catalog(path, rows):
    header = ["id", "redshift", "spectrum_file"] + [c for f in FILTERS for c in (f, f"{f}_err")]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(c, "") for c in header])
    return path


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _missing(cell: str) -> bool:
    return cell == "" or np.isnan(float(cell))


# ------------------------------------------------------------------ the reader
def test_read_spectrum_csv_fits_units_and_bad_pixels(tmp_path):
    flam = np.linspace(1.0, 2.0, 50) * 1e-17
    err = np.full(50, 1e-18)
    err[3], flam[7] = 0.0, np.nan  # masked, not fatal
    wave = np.linspace(5000.0, 6000.0, 50)
    got = read_spectrum(_write_csv(tmp_path / "s.csv", {"Wave": wave, "FLUX": flam, "Err": err}))
    assert got[0].shape == (50,) and np.allclose(got[0], wave)
    assert not got[3][3] and not got[3][7] and got[3].sum() == 48
    assert np.allclose(got[1][got[3]], flam[got[3]]) and np.all(got[2] > 0)
    # the same spectrum as f_ν [µJy] on nm, one row of vectors, with declared units
    fnu_ujy = flam * wave**2 / C_AA_S / 1e-29
    path = _write_fits(tmp_path / "s.fits", {"LAMBDA": wave / 10.0, "FNU": fnu_ujy, "SIGMA": err * wave**2 / C_AA_S / 1e-29},
                       units={"LAMBDA": "nm", "FNU": "uJy", "SIGMA": "uJy"})
    again = read_spectrum(path, flux_unit="uJy", wavelength_unit="nm")
    assert np.allclose(again[0], wave, rtol=1e-12)
    assert np.array_equal(again[3], got[3])
    assert np.allclose(again[1][got[3]], flam[got[3]], rtol=1e-10)
    assert np.allclose(again[2][got[3]], err[got[3]], rtol=1e-10)
    # inverse variance and SDSS's log10 wavelength, in units of 1e-17, one pixel per row
    ivar = np.zeros(50)
    ivar[err > 0] = (1e-17 / err[err > 0]) ** 2
    sdss = _write_fits(tmp_path / "sdss.fits", {"loglam": np.log10(wave), "flux": flam / 1e-17, "ivar": ivar},
                       vector_row=False)
    third = read_spectrum(sdss, flux_scale=1e-17)
    assert np.allclose(third[0], wave) and np.array_equal(third[3], got[3])
    assert np.allclose(third[2][got[3]], err[got[3]])


def test_read_spectrum_refuses_bad_files_naming_them(tmp_path):
    wave = np.linspace(5000.0, 6000.0, 20)
    good = {"wave": wave, "flux": np.ones(20), "err": np.ones(20)}
    cases = [
        (tmp_path / "absent.csv", {}, "not found"),
        (_write_csv(tmp_path / "nofl.csv", {"wave": wave, "err": np.ones(20)}), {}, "no flux column"),
        (_write_csv(tmp_path / "noerr.csv", {"wave": wave, "flux": np.ones(20)}), {}, "no error column"),
        (_write_csv(tmp_path / "desc.csv", {**good, "wave": wave[::-1]}), {}, "strictly increasing"),
        (_write_csv(tmp_path / "nan.csv", {**good, "err": np.zeros(20)}), {}, "no usable pixel"),
        (_write_csv(tmp_path / "ok.csv", good), {"flux_unit": "W/m2"}, "flux_unit"),
        (_write_csv(tmp_path / "ok2.csv", good), {"wavelength_unit": "km"}, "wavelength_unit"),
        (_write_fits(tmp_path / "len.fits", {"wave": wave, "flux": np.ones(19), "err": np.ones(20)}), {},
         "one length"),
        (_write_fits(tmp_path / "unit.fits", good, units={"flux": "uJy"}), {}, "declares unit"),
        (_write_csv(tmp_path / "s.txt", good), {}, "unknown format"),
    ]
    for path, kwargs, message in cases:
        with pytest.raises(DataError, match=message) as info:
            read_spectrum(path, **kwargs)
        assert path.name in str(info.value)


@pytest.mark.realdata
def test_read_real_vandels_spectrum():
    path = require_real_data() / "VANDELS_CDFS_017433.fits"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    wave, flux, err, mask = read_spectrum(path)  # WAVE/FLUX/ERR, one row of vectors, units declared
    assert wave.shape == flux.shape == err.shape == mask.shape == (2154,)
    assert 4800.0 < wave[0] < wave[-1] < 10300.0 and mask.all()
    assert 1e-19 < np.median(flux) < 1e-17 and np.all(err > 0)
    with pytest.raises(DataError, match="declares unit"):
        read_spectrum(path, flux_unit="cgs")


# ------------------------------------------------------------------ configuration
def test_spectroscopy_config_is_validated(tmp_path):
    from tengri.model.config import load_config, model_from_config

    cfg = load_config(_config(tmp_path))
    model, spec = model_from_config(cfg)
    assert "veldisp_kms" not in model.parameters.names  # photometry-only galaxies do without it
    assert spec.spectroscopy.free_parameter_names == ("veldisp_kms",)
    assert spec.spectroscopy.fitter_options == {"calibration_marginalize": True, "cal_n_poly": 2,
                                                "cal_prior_sigma": 1.0}
    bad = [({"colour": "x"}, "colour"), ({"flux_unit": "flam_si"}, "flux_unit"),
           ({"wavelength_unit": "A"}, "wavelength_unit"), ({"sigma_aa": 1.0}, "resolution or sigma_aa"),
           ({"cal_n_poly": 0}, "cal_n_poly"), ({"eline_mode": "fitted"}, "nebular"),
           ({"eline_marginalize": False, "eline_mode": "marginalized"}, "eline_marginalize"),
           ({"calibration_marginalize": "yes"}, "calibration_marginalize"), ({"lines": ["Hzeta"]}, "Hzeta"),
           ({"column": ""}, "column")]
    for change, message in bad:
        broken = {**cfg, "spectroscopy": {**cfg["spectroscopy"], **change}}
        with pytest.raises(ConfigError, match=message):
            model_from_config(broken)


def test_bad_spectrum_files_become_error_rows(tmp_path):
    """No galaxy can be fitted here, so nothing compiles: the catalog completes with error rows."""
    (tmp_path / "spectra").mkdir()
    _write_csv(tmp_path / "spectra" / "empty.csv", {"wave": WAVE_AA, "flux": np.full(200, np.nan),
                                                    "err": np.ones(200)})
    phot = {c: 1.0 for f in FILTERS for c in (f, f"{f}_err")}
    catalog = _catalog(tmp_path / "cat.csv", [
        {"id": "a", "redshift": REDSHIFT, "spectrum_file": "spectra/missing.fits", **phot},
        {"id": "b", "redshift": REDSHIFT, "spectrum_file": "spectra/empty.csv", **phot},
    ])
    out = tmp_path / "out"
    assert main(["fit", str(catalog), "--config", str(_config(tmp_path)), "--out", str(out), "--quiet"]) == 1
    rows = _rows(out / "summary.csv")
    assert [r["id"] for r in rows] == ["a", "b"]
    assert "DataError" in rows[0]["error"] and "missing.fits" in rows[0]["error"]
    assert "no usable pixel" in rows[1]["error"]
    assert "veldisp_kms_p50" in rows[0] and _missing(rows[0]["stellar_mass_p50"])
    # batched fits cannot take spectra: refused before anything is written
    from tengri.fit_catalog import fit_catalog

    with pytest.raises(ParameterError, match="spectroscopy"):
        fit_catalog(catalog, _config(tmp_path), "map", tmp_path / "out2", strategy="batched", progress=False)
    assert not (tmp_path / "out2").exists()
    # the spectrum column must exist
    _catalog(tmp_path / "nocol.csv", [{"id": "a", "redshift": REDSHIFT, **phot}])
    text = (tmp_path / "nocol.csv").read_text().replace("spectrum_file,", "spec,")
    (tmp_path / "nocol.csv").write_text(text)
    assert main(["fit", str(tmp_path / "nocol.csv"), "--config", str(_config(tmp_path)),
                 "--out", str(tmp_path / "out3"), "--quiet"]) == 2
    assert not (tmp_path / "out3").exists()


# ------------------------------------------------------------------ joint fits end to end
def _mock_galaxies(tmp_path, seed=3):
    """Photometry [µJy] and f_λ spectra of TRUTHS from the joint model, with noise."""
    from tengri.model.config import model_from_config
    from tengri.model.observation import Joint

    base, spec = model_from_config(_config(tmp_path))
    joint = model_from_config(_config(tmp_path), observation=Joint(
        base.photometry, spec.spectroscopy.spectroscopy(WAVE_AA, (REDSHIFT, REDSHIFT))))[0]
    rng = np.random.default_rng(seed)
    out = []
    for truth in TRUTHS:
        theta = {**FIXED, **truth}
        phot = np.asarray(joint.predict_photometry(theta)) / 1e-29
        flam = np.asarray(joint.predict_spectrum(theta))
        phot_err, flam_err = phot / 20.0, np.full(flam.size, np.median(flam) / 20.0)
        out.append({"phot": phot + phot_err * rng.normal(size=phot.size), "phot_err": phot_err,
                    "flam": flam + flam_err * rng.normal(size=flam.size), "flam_err": flam_err})
    return out


def _write_run(tmp_path, galaxies, unit):
    """A catalog (galaxy 0: CSV spectrum, galaxy 1: FITS, galaxy 2: none) with spectra in ``unit``."""
    folder = tmp_path / unit
    folder.mkdir()
    rows = []
    for n, gal in enumerate(galaxies + [galaxies[0]]):
        row = {"id": f"g{n}", "redshift": REDSHIFT}
        for f, v, e in zip(FILTERS, gal["phot"], gal["phot_err"]):
            row[f], row[f"{f}_err"] = v, e
        to_unit = 1.0 if unit == "flam" else WAVE_AA**2 / C_AA_S / 1e-29
        columns = {"wavelength": WAVE_AA, "flux": gal["flam"] * to_unit, "error": gal["flam_err"] * to_unit}
        if n == 0:
            row["spectrum_file"] = _write_csv(folder / "g0.csv", columns).name
        elif n == 1:
            row["spectrum_file"] = str(_write_fits(folder / "g1.fits", columns))  # absolute path
        rows.append(row)
    return _catalog(folder / "cat.csv", rows), _config(tmp_path, unit)


@pytest.mark.slow
@pytest.mark.full
def test_joint_fits_recover_mass_in_flam_and_fnu_files(tmp_path):
    from tengri.posterior import Posterior

    galaxies = _mock_galaxies(tmp_path)
    summaries = {}
    for unit in ("flam", "uJy"):
        catalog, config = _write_run(tmp_path, galaxies, unit)
        out = tmp_path / f"out_{unit}"
        args = ["fit", str(catalog), "--config", str(config), "--out", str(out), "--quiet",
                "--option", "n_starts=2"]
        assert main(args) == 0
        summaries[unit] = _rows(out / "summary.csv")
        assert [r["id"] for r in summaries[unit]] == ["g0", "g1", "g2"]
        assert not any(r["error"] for r in summaries[unit])
        types = [Posterior.load(out / "posteriors" / f"g{n}.h5").diagnostics["data_type"] for n in range(3)]
        assert types == ["joint", "joint", "photometry"]
        if unit == "flam":  # a resumed run fits nothing again
            stamps = {p.name: p.stat().st_mtime_ns for p in (out / "posteriors").iterdir()}
            assert main(args + ["--format", "fits"]) == 0
            assert {p.name: p.stat().st_mtime_ns for p in (out / "posteriors").iterdir()} == stamps
    for row, truth in zip(summaries["flam"], TRUTHS):
        assert abs(float(row["stellar_mass_p50"]) - truth["stellar_mass"]) < 0.15, row
        assert 50.0 <= float(row["veldisp_kms_p50"]) <= 300.0
    assert _missing(summaries["flam"][2]["veldisp_kms_p50"])  # photometry only
    for a, b in zip(summaries["flam"], summaries["uJy"]):
        for name in ("stellar_mass_p50", "age_gyr_p50", "av_p50"):
            assert abs(float(a[name]) - float(b[name])) < 1e-3, (a["id"], name)


def test_configuration_page_documents_every_spectroscopy_key():
    from pathlib import Path

    from tengri.model.spectro_config import SPECTROSCOPY_KEYS

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert [k for k in SPECTROSCOPY_KEYS if f"| `{k}` |" not in text] == []


@pytest.mark.slow
def test_dask_workers_read_spectrum_files(tmp_path):
    """The Dask path hands the [spectroscopy] settings to its workers: a bad file gives the
    same error row as in-process (nothing to fit, so nothing compiles)."""
    pytest.importorskip("distributed")
    phot = {c: 1.0 for f in FILTERS for c in (f, f"{f}_err")}
    catalog = _catalog(tmp_path / "cat.csv", [{"id": "a", "redshift": REDSHIFT,
                                               "spectrum_file": "missing.csv", **phot}])
    out = tmp_path / "out"
    assert main(["fit", str(catalog), "--config", str(_config(tmp_path)), "--out", str(out), "--quiet",
                 "--dask", "local:1"]) == 1
    error = _rows(out / "summary.csv")[0]["error"]
    assert "spectrum file not found" in error and "missing.csv" in error
