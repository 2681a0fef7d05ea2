"""Real data: MAP stellar masses of GOODS-S galaxies against the published FAST fits.

Uses ../shared/data/real (3D-HST v4.1; skipped with a message when absent). CI fits
a fixed random subset to stay in budget; bench/goodss_fast.py fits all 616.
"""

import numpy as np
import pytest

from conftest import require_real_data

N_SUBSET = 60


@pytest.mark.realdata
@pytest.mark.slow
def test_map_stellar_masses_agree_with_fast(tmp_path):
    real = require_real_data()
    from tengri.examples.goodss import FAST_LIKE_CONFIG, fast_reference, goodss_catalog
    from tengri.fit_catalog import fit_catalog

    table = goodss_catalog(real)
    fast = fast_reference(real)
    rng = np.random.default_rng(0)
    rows_idx = np.sort(rng.choice(len(table), N_SUBSET, replace=False))
    subset = table[rows_idx]
    path = tmp_path / "goodss.ecsv"
    subset.write(path, format="ascii.ecsv")
    rows = fit_catalog(path, FAST_LIKE_CONFIG, "map", tmp_path / "out", save_posteriors=False, progress=False)
    assert all(not r["error"] for r in rows)
    ours = np.array([r["log_mstar_p50"] for r in rows])
    ref = np.asarray(fast["lmass"])[rows_idx]
    delta = ours - ref
    offset = np.median(delta)
    scatter = 1.4826 * np.median(np.abs(delta - offset))
    print(f"log M* − FAST: median offset {offset:+.3f} dex, NMAD scatter {scatter:.3f} dex (n={N_SUBSET})")
    assert abs(offset) < 0.15
    assert scatter < 0.25
