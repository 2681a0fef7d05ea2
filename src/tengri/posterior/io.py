"""HDF5 storage of a Posterior.

File layout (``format_version`` 1)::

    /                 attrs: format_version, tengri_version, method, wall_time_s,
                             n_chains, [log_evidence], [log_evidence_err]
    /samples/<name>   (n_samples, ...) draws, when the result has draws
    /params/<name>    point-estimate values
    /loss_history     (n_steps,), when present
    /diagnostics/...  nested dicts become nested groups
    /eline/fluxes, /eline/names, /eline/wavelengths_aa   when present

Every dataset and group under ``params`` and ``diagnostics`` carries a
``tengri_type`` attribute (``float``, ``int``, ``bool``, ``str``, ``none``,
``ndarray``, ``list``, ``tuple``, ``dict``) so that values come back as the same
Python types. Groups keep insertion order. Files are written to a temporary file in
the target directory and moved into place with ``os.replace``, so a failed write
never leaves a partial file behind.
"""

from __future__ import annotations

import os
import uuid
from os import PathLike
from typing import Any, Mapping

import h5py
import numpy as np

__all__ = ["save_posterior", "load_posterior", "write_hdf5_atomically", "FORMAT_VERSION"]

#: Version of the file layout written by :func:`save_posterior`.
FORMAT_VERSION = 1

_TYPE = "tengri_type"


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key or "/" in key or key == ".":
        raise ValueError(
            f"cannot store key {key!r} in {where}: HDF5 names must be non-empty strings "
            "without '/'"
        )
    return key


def _write_array(group: h5py.Group, key: str, array: np.ndarray) -> h5py.Dataset:
    if array.dtype.kind == "U":
        dataset = group.create_dataset(key, data=array.astype(object), dtype=h5py.string_dtype())
        dataset.attrs["numpy_dtype"] = array.dtype.str
        return dataset
    if array.dtype.kind not in "biufc":
        raise TypeError(f"cannot store array {key!r} of dtype {array.dtype} in HDF5")
    return group.create_dataset(key, data=array)


def _write_value(group: h5py.Group, key: str, value: Any, where: str) -> None:
    """Store one value (recursively for dicts) with its Python type tag."""
    _check_key(key, where)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        sub = group.create_group(key, track_order=True)
        sub.attrs[_TYPE] = "dict"
        for k, v in value.items():
            _write_value(sub, _check_key(k, f"{where}/{key}"), v, f"{where}/{key}")
        return
    if value is None:
        dataset, kind = group.create_dataset(key, data=h5py.Empty("f8")), "none"
    elif isinstance(value, bool):
        dataset, kind = group.create_dataset(key, data=np.bool_(value)), "bool"
    elif isinstance(value, int):
        dataset, kind = group.create_dataset(key, data=np.int64(value)), "int"
    elif isinstance(value, float):
        dataset, kind = group.create_dataset(key, data=np.float64(value)), "float"
    elif isinstance(value, str):
        dataset, kind = group.create_dataset(key, data=value, dtype=h5py.string_dtype()), "str"
    elif isinstance(value, np.ndarray):
        dataset, kind = _write_array(group, key, value), "ndarray"
    elif isinstance(value, (list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind not in "biufcU":
            raise TypeError(
                f"cannot store {where}/{key}: lists must hold numbers, bools or strings, "
                f"got {value!r:.80}"
            )
        dataset, kind = _write_array(group, key, array), type(value).__name__
    else:
        raise TypeError(
            f"cannot store {where}/{key} of type {type(value).__name__}; supported: dict, "
            "str, bool, int, float, None, numpy arrays, lists/tuples of numbers or strings"
        )
    dataset.attrs[_TYPE] = kind


def _read_array(dataset: h5py.Dataset) -> np.ndarray:
    if "numpy_dtype" in dataset.attrs:
        return np.asarray(dataset.asstr()[()], dtype=dataset.attrs["numpy_dtype"])
    return np.asarray(dataset[()])


def _read_value(node: h5py.Group | h5py.Dataset) -> Any:
    kind = node.attrs.get(_TYPE, "ndarray")
    if kind == "dict":
        return {k: _read_value(node[k]) for k in node.keys()}
    if kind == "none":
        return None
    if kind == "bool":
        return bool(node[()])
    if kind == "int":
        return int(node[()])
    if kind == "float":
        return float(node[()])
    if kind == "str":
        return node.asstr()[()]
    array = _read_array(node)
    if kind == "list":
        return array.tolist()
    if kind == "tuple":
        return tuple(array.tolist())
    return array


def _write_contents(f: h5py.File, posterior) -> None:
    """Write every part of ``posterior`` into the open file ``f``."""
    from tengri import __version__

    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["tengri_version"] = __version__
    f.attrs["method"] = posterior.method
    f.attrs["wall_time_s"] = posterior.wall_time_s
    f.attrs["n_chains"] = posterior.n_chains
    if posterior.log_evidence is not None:
        f.attrs["log_evidence"] = posterior.log_evidence
    if posterior.log_evidence_err is not None:
        f.attrs["log_evidence_err"] = posterior.log_evidence_err
    if posterior.samples is not None:
        group = f.create_group("samples", track_order=True)
        for name, draws in posterior.samples.items():
            _write_array(group, _check_key(name, "samples"), draws)
    params = f.create_group("params", track_order=True)
    for name, value in posterior.params.items():
        _write_value(params, name, value, "params")
    if posterior.loss_history is not None:
        f.create_dataset("loss_history", data=posterior.loss_history)
    diagnostics = f.create_group("diagnostics", track_order=True)
    for name, value in posterior.diagnostics.items():
        _write_value(diagnostics, name, value, "diagnostics")
    eline = {
        "fluxes": posterior.eline_fluxes,
        "names": None if posterior.eline_names is None else np.asarray(posterior.eline_names, dtype=str),
        "wavelengths_aa": posterior.eline_wavelengths_aa,
    }
    if any(v is not None for v in eline.values()):
        group = f.create_group("eline")
        for name, value in eline.items():
            if value is not None:
                _write_array(group, name, value)


def save_posterior(posterior, path: str | PathLike) -> None:
    """Write ``posterior`` to an HDF5 file at ``path``, atomically.

    The file is written next to ``path`` under a temporary name and renamed over
    ``path`` only when complete, so an interrupted or failed write leaves any
    previous file untouched and no partial file behind. The model and fitter are
    runtime objects and are not stored.

    Raises
    ------
    TypeError, ValueError
        If a diagnostics or parameter entry cannot be stored (the message names it).
    """
    write_hdf5_atomically(path, lambda f: _write_contents(f, posterior))


def write_hdf5_atomically(path: str | PathLike, write: Any) -> None:
    """Create an HDF5 file at ``path`` with ``write(h5py.File)``, atomically.

    The file is written beside the target under a temporary name (same file
    system, so ``os.replace`` is atomic; created by h5py itself so it gets the
    usual permissions) and renamed into place; on any error the temporary file is
    removed and nothing is left at ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp, "w-", track_order=True) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_posterior(path: str | PathLike, model: Any = None):
    """Read a Posterior written by :func:`save_posterior`.

    Parameters
    ----------
    path : str or path-like
    model : SEDModel, optional
        Attached to the result (for derived quantities and plots).

    Raises
    ------
    ValueError
        If the file is not a tengri posterior, or was written with a newer
        ``format_version`` than this tengri reads.
    """
    from tengri.posterior.core import Posterior

    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        if "format_version" not in f.attrs:
            raise ValueError(f"{path!r} is not a tengri posterior file (no format_version attribute)")
        version = int(f.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path!r} has format_version {version}, written by a newer tengri "
                f"({f.attrs.get('tengri_version', '?')}); this tengri reads format_version "
                f"≤ {FORMAT_VERSION}: upgrade tengri"
            )
        if version < 1:
            raise ValueError(f"{path!r} has an invalid format_version {version}")
        attrs = dict(f.attrs)
        samples = {k: _read_array(v) for k, v in f["samples"].items()} if "samples" in f else None
        params = {k: _read_value(v) for k, v in f["params"].items()}
        diagnostics = {k: _read_value(v) for k, v in f["diagnostics"].items()}
        loss_history = _read_array(f["loss_history"]) if "loss_history" in f else None
        eline = {k: _read_array(v) for k, v in f["eline"].items()} if "eline" in f else {}
    names = eline.get("names")
    return Posterior(
        samples=samples,
        params=params,
        method=str(attrs["method"]),
        wall_time_s=float(attrs["wall_time_s"]),
        diagnostics=diagnostics,
        loss_history=loss_history,
        log_evidence=float(attrs["log_evidence"]) if "log_evidence" in attrs else None,
        log_evidence_err=float(attrs["log_evidence_err"]) if "log_evidence_err" in attrs else None,
        eline_fluxes=eline.get("fluxes"),
        eline_names=None if names is None else names.tolist(),
        eline_wavelengths_aa=eline.get("wavelengths_aa"),
        n_chains=int(attrs["n_chains"]),
        model=model,
    )
