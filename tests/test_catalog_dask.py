"""`tengri fit` on a Dask LocalCluster(2): the in-process summary, even when a worker
is killed in the middle of the run."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from tengri.demo import demo_config_path, make_mock_catalog
from tengri.fit_catalog import fit_catalog

pytestmark = [pytest.mark.slow, pytest.mark.full]

OPTIONS = {"n_starts": 1, "n_steps": 30}
NUMBERS = ("stellar_mass_p50", "av_p50", "log_mstar_p50", "age_gyr_p50")


def _kill_one_worker_when_busy(client, out, stop):
    """SIGKILL one worker process as soon as the first chunk is written."""
    while not stop.is_set():
        if list((out / "parts").glob("part-*.csv")):
            pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
            return
        time.sleep(0.1)


def test_local_cluster_matches_in_process_despite_a_killed_worker(tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    import tengri

    catalog = tmp_path / "cat.csv"
    make_mock_catalog(catalog, n_galaxies=24, snr=20.0, seed=5)
    cache_dir = tengri.enable_persistent_cache(tmp_path / "xla")
    reference = fit_catalog(catalog, demo_config_path(), "map", tmp_path / "local", options=OPTIONS,
                            progress=False, chunk_size=4, save_posteriors=False)

    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        stop = threading.Event()
        killer = threading.Thread(target=_kill_one_worker_when_busy, args=(client, out, stop))
        killer.start()
        try:
            rows = fit_catalog(catalog, demo_config_path(), "map", out, options=OPTIONS, progress=False,
                               chunk_size=4, save_posteriors=False, client=client)
        finally:
            stop.set()
            killer.join()
    assert tengri.persistent_cache_dir() == cache_dir
    assert [r["id"] for r in rows] == [r["id"] for r in reference]
    assert not any(r["error"] for r in rows)
    for got, want in zip(rows, reference):
        for name in NUMBERS:
            assert got[name] == want[name], (got["id"], name)
    assert len(list((out / "parts").glob("part-*.csv"))) == 6
