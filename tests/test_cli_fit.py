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


def _fit_args(catalog, out, *extra):
    return ["fit", str(catalog), "--config", str(demo_config_path()), "--method", "map", "--out", str(out),
            "--quiet", "--option", "n_starts=1", *extra]


def test_resume_skips_finished_galaxies_and_formats(mock_catalog, tmp_path):
    catalog, _ = mock_catalog
    out = tmp_path / "out"
    # chunks of 2 padded to 3: the batch shape of the test above, nothing compiles anew
    assert main(_fit_args(catalog, out, "--chunk-size", "2", "--n-pad", "3")) == 0
    parts = sorted((out / "parts").iterdir())
    assert len(parts) == 2  # chunks of 2 and 1
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "posteriors").iterdir()}
    before = (out / "summary.csv").read_text()
    # a resumed run fits nothing again and writes the same summary (here also as FITS)
    assert main(_fit_args(catalog, out, "--chunk-size", "2", "--n-pad", "3", "--format", "fits")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "posteriors").iterdir()} == stamps
    assert sorted((out / "parts").iterdir()) == parts
    assert (out / "summary.csv").read_text() == before
    from astropy.table import Table

    assert list(Table.read(out / "summary.fits")["id"]) == ["mock000", "mock001", "mock002"]
    # other settings in the same directory are refused unless --no-resume
    assert main(_fit_args(catalog, out, "--option", "n_steps=10")) == 2
    assert main(_fit_args(catalog, out, "--no-resume", "--format", "hdf5", "--chunk-size", "3")) == 0
    assert len(list((out / "parts").iterdir())) == 1
    import h5py

    with h5py.File(out / "summary.h5") as f:
        assert [s.decode() for s in f["summary/id"][:]] == ["mock000", "mock001", "mock002"]


def test_bad_chunk_size_and_dask_spec_fail_before_writing(mock_catalog, tmp_path):
    catalog, _ = mock_catalog
    out = tmp_path / "out"
    assert main(_fit_args(catalog, out, "--chunk-size", "0")) == 2
    assert main(_fit_args(catalog, out, "--dask", "lokal")) == 2
    assert main(_fit_args(catalog, out, "--n-pad", "0")) == 2
    assert not out.exists()


def test_threads_fit_per_galaxy_methods_side_by_side_with_the_same_summary(mock_catalog, tmp_path):
    catalog, _ = mock_catalog
    args = ["--method", "laplace", "--option", "n_starts=1", "--option", "n_samples=40", "--no-posteriors"]
    base = ["fit", str(catalog), "--config", str(demo_config_path()), "--quiet", *args]
    from tengri.fit_catalog import fit_catalog

    options = {"n_starts": 1, "n_samples": 40}
    one = fit_catalog(catalog, demo_config_path(), "laplace", tmp_path / "one", options=options,
                      save_posteriors=False, progress=False, strategy="sequential")
    two = fit_catalog(catalog, demo_config_path(), "laplace", tmp_path / "two", options=options,
                      save_posteriors=False, progress=False, strategy="sequential", n_threads=2)
    drop = ("wall_time_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in one] == \
        [{k: v for k, v in r.items() if k not in drop} for r in two]
    assert main([*base, "--out", str(tmp_path / "cli"), "--threads", "2"]) == 0
    assert [r["id"] for r in _rows(tmp_path / "cli" / "summary.csv")] == ["mock000", "mock001", "mock002"]
    assert main([*base, "--out", str(tmp_path / "bad"), "--threads", "0"]) == 2
    assert not (tmp_path / "bad").exists()


KILL_SCRIPT = """
import sys
from tengri.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.full
def test_killed_run_resumes_without_loss_or_repeat(tmp_path):
    """300 galaxies, SIGKILL once some chunks are written, rerun: each galaxy once,
    the finished ones untouched (byte-identical posteriors and parts)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    catalog = tmp_path / "cat300.csv"
    make_mock_catalog(catalog, n_galaxies=300, snr=20.0, seed=11)
    out = tmp_path / "out"
    args = [sys.executable, "-c", KILL_SCRIPT, *_fit_args(catalog, out, "--chunk-size", "25",
                                                          "--option", "n_steps=30")]
    env = {**os.environ, "TENGRI_NO_BACKGROUND_COMPILE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts_dir = out / "parts"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if parts_dir.is_dir() and len(list(parts_dir.glob("part-*.csv"))) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.csv").exists()
    snapshot = {p: p.read_bytes() for d in (parts_dir, out / "posteriors") for p in d.iterdir()
                if not p.name.startswith(".")}
    finished = {row["id"] for p in parts_dir.glob("part-*.csv") for row in _rows(p)}
    assert 0 < len(finished) < 300
    assert subprocess.run(args, env=env, stdout=subprocess.DEVNULL).returncode == 0
    for path, content in snapshot.items():
        if path.parent == parts_dir or path.stem in finished:
            assert path.read_bytes() == content, path
    ids = [r["id"] for r in _rows(out / "summary.csv")]
    assert ids == [f"mock{i:03d}" for i in range(300)]
    per_part = [row["id"] for p in parts_dir.glob("part-*.csv") for row in _rows(p)]
    assert sorted(per_part) == sorted(ids)  # every galaxy in exactly one part
    assert not any(r["error"] for r in _rows(out / "summary.csv"))
