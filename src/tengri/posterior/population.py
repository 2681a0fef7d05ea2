"""PopulationPosterior: the result of hierarchical population inference.

Holds draws of the two shared hyperparameters of the stochastic SFH's power
spectrum (``sfh_field_psd_sigma`` [dex], ``sfh_field_psd_tau_myr`` [Myr], the
parameter names the SEDModel uses) and, optionally, every galaxy's draws of its
own free parameters (latent field ``psd_xi_*`` and physical parameters).

Draws are stored flat, chain-major: ``n_chains`` chains of ``n_draws`` each give
arrays of shape ``(n_chains * n_draws,)`` (``(n_chains * n_draws, ...)`` for
non-scalar quantities), so that split-R̂ can see the chains again.

HDF5 layout (``format_version`` 1, written atomically with the helpers of
:mod:`tengri.posterior.io`)::

    /                      attrs: format_version, kind="population", tengri_version,
                                  method, wall_time_s, n_chains, n_galaxies
    /shared_samples/<p>    (n,) draws of each shared hyperparameter
    /shared_params/<p>     posterior means
    /individual/<i>/<p>    (n,) draws of galaxy i (i = 000, 001, ...), when stored
    /diagnostics/...       the method's diagnostics (nested dicts → groups)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from os import PathLike
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from tengri.analysis.diagnostics import effective_sample_size, rhat
from tengri.errors import DataError, ParameterError
from tengri.posterior.io import (FORMAT_VERSION, _check_key, _read_array, _read_value, _write_array, _write_value,
                                 write_hdf5_atomically)

__all__ = ["PopulationPosterior", "GalaxyDraws", "SHARED_NAMES", "aggregate_per_galaxy"]

#: Names of the shared hyperparameters (those of the stochastic SFH in SEDModel).
SHARED_NAMES = ("sfh_field_psd_sigma", "sfh_field_psd_tau_myr")
# The seed's docstring also calls them psd_sigma / psd_tau_myr.
_ALIASES = {"psd_sigma": "sfh_field_psd_sigma", "psd_tau_myr": "sfh_field_psd_tau_myr"}
_FILE_KIND = "population"


@dataclass(frozen=True)
class GalaxyDraws:
    """One galaxy's part of a population posterior.

    Attributes
    ----------
    samples : dict of str → ndarray, shape (n,)
        Draws of the galaxy's free parameters (chain-major).
    params : dict of str → float
        Their posterior means.
    """

    samples: dict
    params: dict


class _DiagnosticsDict(dict):
    """The method's diagnostics (a dict) that, when called, computes convergence
    diagnostics: ``post.diagnostics["acceptance_rate"]`` and ``post.diagnostics()``."""

    def __init__(self, values: Mapping, owner: "PopulationPosterior"):
        super().__init__(values)
        self._owner = owner

    def __call__(self, exclude_prefixes: Sequence[str] = ("psd_xi",)) -> dict:
        return self._owner.convergence_diagnostics(exclude_prefixes)


def _as_chains(draws: np.ndarray, n_chains: int) -> np.ndarray:
    """Flat chain-major draws (n,) → (n_chains, n // n_chains)."""
    draws = np.asarray(draws, dtype=np.float64)
    return draws.reshape(n_chains, -1)


def _rhat_and_ess(draws: np.ndarray, n_chains: int) -> tuple[float, float] | None:
    """(split-R̂, ESS) of one scalar's draws, or None when it is constant."""
    chains = _as_chains(draws, n_chains)
    if chains.shape[1] < 4 or np.ptp(chains) == 0:
        return None
    return rhat(chains), effective_sample_size(chains)


def _percentile(values: np.ndarray, q: float) -> float:
    """q-th percentile; with infinite values (stuck chains) the nearest-rank one, so
    that an inf is never interpolated into NaN."""
    method = "linear" if np.all(np.isfinite(values)) else "nearest"
    return float(np.percentile(values, q, method=method))


def aggregate_per_galaxy(per_galaxy: Sequence[Mapping[str, tuple[float, float]]]) -> dict:
    """Population summary of per-galaxy (R̂, ESS) values.

    Parameters
    ----------
    per_galaxy : sequence of dict
        One dict per galaxy: parameter name → (rhat, ess).

    Returns
    -------
    dict
        name → ``{rhat_p50, rhat_p90, rhat_max, ess_p50, ess_min, n_galaxies}`` over
        the galaxies that have the parameter (R̂ = inf, chains stuck at different
        values, counts as the largest).
    """
    names = list(dict.fromkeys(n for galaxy in per_galaxy for n in galaxy))
    out = {}
    for name in names:
        values = np.array([galaxy[name] for galaxy in per_galaxy if name in galaxy], dtype=np.float64)
        r, e = values[:, 0], values[:, 1]
        out[name] = {
            "rhat_p50": _percentile(r, 50),
            "rhat_p90": _percentile(r, 90),
            "rhat_max": float(np.max(r)),
            "ess_p50": float(np.percentile(e, 50)),
            "ess_min": float(np.min(e)),
            "n_galaxies": int(values.shape[0]),
        }
    return out


class PopulationPosterior:
    """Posterior of a population's shared PSD hyperparameters (and, optionally, of each galaxy).

    Parameters
    ----------
    shared_samples : dict of str → array, shape (n,)
        Draws of ``sfh_field_psd_sigma`` [dex] and ``sfh_field_psd_tau_myr`` [Myr]
        (the aliases ``psd_sigma`` / ``psd_tau_myr`` are accepted and renamed),
        chain-major.
    shared_params : dict, optional
        Posterior means; computed from ``shared_samples`` when None.
    individual_samples : list of dict, optional
        Per galaxy: parameter name → (n,) draws, same draw order as the shared
        ones. None when not kept (memory).
    method : str
        The method that produced the draws (e.g. ``"Hierarchical EVI (JIT)"``).
    wall_time_s : float
        Wall time of the inference [s] (MAP initialisation included).
    diagnostics : dict, optional
        Method-specific values (iterations, acceptance, ELBO history, ...). The
        attribute is that dict; calling it, ``post.diagnostics()``, returns the
        convergence diagnostics (:meth:`convergence_diagnostics`).
    n_chains : int
        Number of chains the flat draws are made of (1 for VI: independent draws).
    """

    def __init__(self, shared_samples: Mapping[str, Any], shared_params: Mapping[str, float] | None = None,
                 individual_samples: Sequence[Mapping[str, Any]] | None = None, method: str = "",
                 wall_time_s: float = 0.0, diagnostics: Mapping[str, Any] | None = None, n_chains: int = 1):
        if not isinstance(shared_samples, Mapping) or not shared_samples:
            raise DataError("shared_samples must be a non-empty dict name → (n,) draws")
        shared = {_ALIASES.get(k, k): np.asarray(v, dtype=np.float64) for k, v in shared_samples.items()}
        n = {v.shape[0] if v.ndim else -1 for v in shared.values()}
        if len(n) != 1 or -1 in n:
            raise DataError(f"shared_samples must be 1-D arrays of one length, got shapes "
                            f"{ {k: v.shape for k, v in shared.items()} }")
        n_draws = n.pop()
        if not isinstance(n_chains, (int, np.integer)) or n_chains < 1 or n_draws % n_chains:
            raise ParameterError(f"n_chains must be a positive divisor of the number of draws ({n_draws}), "
                                 f"got {n_chains!r}")
        individual = None
        if individual_samples is not None:
            individual = [{k: np.asarray(v, dtype=np.float64) for k, v in g.items()} for g in individual_samples]
            for i, galaxy in enumerate(individual):
                bad = {k: v.shape for k, v in galaxy.items() if v.ndim == 0 or v.shape[0] != n_draws}
                if bad:
                    raise DataError(f"individual_samples[{i}] must hold ({n_draws}, ...) draws like "
                                    f"shared_samples; got {bad}")
        self.shared_samples = shared
        self.shared_params = ({k: float(np.mean(v)) for k, v in shared.items()} if shared_params is None
                              else {_ALIASES.get(k, k): float(v) for k, v in shared_params.items()})
        self.individual_samples = individual
        self.method = str(method)
        self.wall_time_s = float(wall_time_s)
        self.n_chains = int(n_chains)
        self._diagnostics = _DiagnosticsDict(diagnostics or {}, self)

    @property
    def diagnostics(self) -> _DiagnosticsDict:
        return self._diagnostics

    @property
    def n_samples(self) -> int:
        return next(iter(self.shared_samples.values())).shape[0]

    @property
    def n_galaxies(self) -> int | None:
        return None if self.individual_samples is None else len(self.individual_samples)

    @property
    def individual(self) -> list[GalaxyDraws] | None:
        """Per-galaxy draws and means (None when individual draws were not kept)."""
        if self.individual_samples is None:
            return None
        return [GalaxyDraws(samples=g, params={k: np.mean(v, axis=0) if v.ndim > 1 else float(np.mean(v))
                                                for k, v in g.items()})
                for g in self.individual_samples]

    def _name(self, name: str) -> str:
        name = _ALIASES.get(name, name)
        if name not in self.shared_samples:
            raise ParameterError(f"unknown shared parameter {name!r}; have {sorted(self.shared_samples)}")
        return name

    # --- summaries --------------------------------------------------------------------------
    def summary(self) -> dict:
        """Median and 68 % interval of each shared hyperparameter.

        Returns
        -------
        dict
            name → ``{"median", "lo68", "hi68", "mean", "std"}`` (16th / 84th
            percentiles for the interval), in the parameter's units.
        """
        out = {}
        for name, draws in self.shared_samples.items():
            lo, med, hi = np.percentile(draws, [16, 50, 84])
            out[name] = {"median": float(med), "lo68": float(lo), "hi68": float(hi),
                         "mean": float(np.mean(draws)), "std": float(np.std(draws))}
        return out

    def summary_str(self) -> str:
        """The summary as a short text table."""
        lines = [f"PopulationPosterior ({self.method}, {self.n_samples} draws, {self.n_chains} chain(s), "
                 f"{self.wall_time_s:.1f} s)"]
        for name, s in self.summary().items():
            lines.append(f"  {name:24s} {s['median']:.4g}  (+{s['hi68'] - s['median']:.3g} / "
                         f"-{s['median'] - s['lo68']:.3g})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary_str()

    def convergence_diagnostics(self, exclude_prefixes: Sequence[str] = ("psd_xi",)) -> dict:
        """Split-R̂ and ESS of the shared block and, per galaxy, aggregated over the population.

        Uses :func:`tengri.analysis.diagnostics.rhat` and
        :func:`~tengri.analysis.diagnostics.effective_sample_size` on the
        ``n_chains`` chains. For VI results (one "chain" of independent draws
        from the variational distribution) R̂ ≈ 1 and ESS ≈ n by construction:
        they measure the Monte Carlo error of the summaries, not whether the
        optimisation converged (see the ELBO / KL history in ``diagnostics``).

        Parameters
        ----------
        exclude_prefixes : tuple of str
            Per-galaxy parameters whose names start with one of these are skipped
            (default: the latent field ``psd_xi_*``).

        Returns
        -------
        dict
            ``{"shared": {p: {"rhat", "ess"}}, "per_galaxy": {p: {"rhat_p50",
            "rhat_p90", "rhat_max", "ess_p50", "ess_min", "n_galaxies"}}}``
            (``per_galaxy`` only when individual draws are kept). Constant
            (zero-variance) parameters are left out.
        """
        prefixes = tuple(exclude_prefixes or ())
        shared = {}
        for name, draws in self.shared_samples.items():
            pair = _rhat_and_ess(draws, self.n_chains)
            if pair is not None:
                shared[name] = {"rhat": pair[0], "ess": pair[1]}
        out = {"shared": shared}
        if self.individual_samples is not None:
            per = []
            for galaxy in self.individual_samples:
                values = {}
                for name, draws in galaxy.items():
                    if name.startswith(prefixes) or draws.ndim != 1:
                        continue
                    pair = _rhat_and_ess(draws, self.n_chains)
                    if pair is not None:
                        values[name] = pair
                per.append(values)
            out["per_galaxy"] = aggregate_per_galaxy(per)
        return out

    # --- plots --------------------------------------------------------------------------------
    def plot_population(self, params: Sequence[str] = SHARED_NAMES, truths: Mapping[str, float] | None = None,
                        bins: int = 30, fig=None):
        """Corner plot of the shared hyperparameters (a histogram for one).

        Parameters
        ----------
        params : sequence of str
            Shared parameter names (aliases ``psd_sigma`` / ``psd_tau_myr`` accepted).
        truths : dict, optional
            Values to mark, by name.
        bins : int
        fig : matplotlib Figure, optional

        Returns
        -------
        numpy.ndarray of matplotlib Axes, shape (n_params, n_params)
        """
        import matplotlib.pyplot as plt

        if isinstance(params, str):
            params = (params,)
        names = [self._name(p) for p in params]
        if not names:
            raise ParameterError("params must name at least one shared parameter")
        truths = {_ALIASES.get(k, k): v for k, v in (truths or {}).items()}
        k = len(names)
        if fig is None:
            fig = plt.figure(figsize=(2.6 * k, 2.6 * k))
        axes = np.asarray(fig.subplots(k, k, squeeze=False))
        for i, yi in enumerate(names):
            for j, xj in enumerate(names):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                x = self.shared_samples[xj]
                if i == j:
                    ax.hist(x, bins=bins, histtype="step", color="k", density=True)
                    lo, med, hi = np.percentile(x, [16, 50, 84])
                    for v in (lo, med, hi):
                        ax.axvline(v, ls="--" if v != med else "-", color="0.4", lw=0.8)
                    if xj in truths:
                        ax.axvline(truths[xj], color="C1")
                    ax.set_yticks([])
                else:
                    ax.hist2d(x, self.shared_samples[yi], bins=bins, cmap="Greys")
                    if xj in truths and yi in truths:
                        ax.plot(truths[xj], truths[yi], "s", color="C1")
                    ax.set_ylabel(yi if j == 0 else "")
                ax.set_xlabel(xj if i == k - 1 else "")
        return axes

    # --- storage ------------------------------------------------------------------------------
    def save(self, path: str | PathLike) -> None:
        """Write to HDF5 at ``path`` atomically (a temporary file renamed into place)."""
        write_hdf5_atomically(path, self._write)

    def _write(self, f: h5py.File) -> None:
        from tengri import __version__

        f.attrs.update({"format_version": FORMAT_VERSION, "kind": _FILE_KIND, "tengri_version": __version__,
                        "method": self.method, "wall_time_s": self.wall_time_s, "n_chains": self.n_chains})
        group = f.create_group("shared_samples", track_order=True)
        for name, draws in self.shared_samples.items():
            _write_array(group, _check_key(name, "shared_samples"), draws)
        group = f.create_group("shared_params", track_order=True)
        for name, value in self.shared_params.items():
            _write_value(group, name, float(value), "shared_params")
        if self.individual_samples is not None:
            f.attrs["n_galaxies"] = len(self.individual_samples)
            individual = f.create_group("individual", track_order=True)
            for i, galaxy in enumerate(self.individual_samples):
                sub = individual.create_group(f"{i:06d}", track_order=True)
                for name, draws in galaxy.items():
                    _write_array(sub, _check_key(name, f"individual/{i}"), draws)
        group = f.create_group("diagnostics", track_order=True)
        for name, value in dict(self.diagnostics).items():
            _write_value(group, name, value, "diagnostics")

    @classmethod
    def load(cls, path: str | PathLike) -> "PopulationPosterior":
        """Read a file written by :meth:`save`.

        Raises
        ------
        ValueError
            Not a tengri population posterior, or written by a newer tengri.
        """
        path = os.fspath(path)
        with h5py.File(path, "r") as f:
            if f.attrs.get("kind") != _FILE_KIND:
                raise ValueError(f"{path!r} is not a tengri population posterior file")
            version = int(f.attrs["format_version"])
            if version > FORMAT_VERSION:
                raise ValueError(f"{path!r} has format_version {version}; this tengri reads ≤ {FORMAT_VERSION}")
            shared = {k: _read_array(v) for k, v in f["shared_samples"].items()}
            means = {k: _read_value(v) for k, v in f["shared_params"].items()}
            individual = None
            if "individual" in f:
                individual = [{k: _read_array(v) for k, v in f["individual"][g].items()}
                              for g in f["individual"].keys()]
            diagnostics = {k: _read_value(v) for k, v in f["diagnostics"].items()}
            attrs = dict(f.attrs)
        return cls(shared, means, individual, method=str(attrs["method"]), wall_time_s=float(attrs["wall_time_s"]),
                   diagnostics=diagnostics, n_chains=int(attrs["n_chains"]))
