"""Helpers shared by the bench scripts: timing, JSON output, bagpipes filter files."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "out"


def timeit(fn, repeat: int = 5, number: int = 1) -> float:
    """Best wall time of ``number`` calls [s], over ``repeat`` repetitions."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def machine() -> dict:
    import jax

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(name: str, result: dict) -> Path:
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    result = {"bench": name, "machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))
    return path


def ssp_grid_from_npz(path):
    """A BC03 grid saved as npz (``age_yr``, ``metallicity_zsun``, ``wavelength_aa``,
    ``lnu``, ``surviving_mass_fraction``), e.g. already on the photometry wavelength
    grid, for machines without bagpipes' FITS grids; None when ``path`` is None."""
    if path is None:
        return None
    from tengri.data.ssp import SSPGrid

    d = np.load(path)
    return SSPGrid.from_arrays(d["age_yr"], d["metallicity_zsun"], d["wavelength_aa"],
                               d["lnu"].astype(np.float64), d["surviving_mass_fraction"])


def bagpipes_filter_files(filters, directory: Path) -> list[str]:
    """Write tengri Filter curves as two-column text files bagpipes can read."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in filters:
        p = directory / f"{f.name}.txt"
        np.savetxt(p, np.column_stack([f.wavelength_aa, f.transmission]))
        paths.append(str(p))
    return paths


def bagpipes_components(theta: dict, sfh: str = "delayed", nebular: bool = True, dust: str = "Calzetti") -> dict:
    """bagpipes model_components equivalent to a tengri parameter dict."""
    sfh_block = {"massformed": theta["stellar_mass"], "metallicity": theta["metallicity"],
                 "age": theta["age_gyr"]}
    if "tau_gyr" in theta:
        sfh_block["tau"] = theta["tau_gyr"]
    comps = {"redshift": theta["redshift"], sfh: sfh_block, "t_bc": 0.01,
             "dust": {"type": dust, "Av": theta["av"], "eta": theta.get("dust_eta", 1.0)}}
    if nebular:
        comps["nebular"] = {"logU": theta.get("log_u", -2.5)}
    return comps
