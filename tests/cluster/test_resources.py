"""CPU and memory budgets come from what the process may use (cgroup quotas), not the host."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from bigquant import KMeans
from bigquant.cluster import resources


def test_cpu_count_is_dasks_usable_count(monkeypatch):
    import dask.system

    assert 1 <= resources.cpu_count() <= (os.cpu_count() or 1)
    monkeypatch.setattr(dask.system, "CPU_COUNT", 1)  # e.g. a container with a 1-CPU quota
    assert resources.cpu_count() == 1


def test_thread_pools_and_local_cluster_follow_the_cpu_quota(monkeypatch):
    import dask.system
    import numba

    from bigquant.cluster.points import n_threads
    from bigquant.pipeline.runtime import machine_layout

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 64)  # numba counts the host's cores
    monkeypatch.setattr(dask.system, "CPU_COUNT", 3)
    assert n_threads() == 3
    assert machine_layout() == (3, 1)
    assert machine_layout(threads_per_worker=1) == (3, 1)


def test_memory_limit_does_not_need_sysconf(monkeypatch):
    import distributed.system

    def no_sysconf(name):  # Windows has no os.sysconf at all
        raise AttributeError("os.sysconf")

    monkeypatch.setattr(os, "sysconf", no_sysconf, raising=False)
    assert resources.memory_limit() == distributed.system.MEMORY_LIMIT > 0


@pytest.mark.filterwarnings("ignore::bigquant.errors.ConvergenceWarning")
def test_persisting_follows_the_memory_limit(monkeypatch, caplog):
    """Pixels are persisted only when they fit in what the process may use (e.g. a cgroup limit)."""
    import dask.array as da
    import distributed.system

    img = da.from_array(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), chunks=32)
    with caplog.at_level(logging.INFO, logger="bigquant.cluster.kmeans"):
        KMeans(3, random_state=0, strategy="pixels", max_iter=3).fit(img)
    assert "persisting" in caplog.text
    caplog.clear()
    monkeypatch.setattr(distributed.system, "MEMORY_LIMIT", img.nbytes)  # a container smaller than 2 x the data
    with caplog.at_level(logging.INFO, logger="bigquant.cluster.kmeans"):
        KMeans(3, random_state=0, strategy="pixels", max_iter=3).fit(img)
    assert "do not fit in memory" in caplog.text and "persisting" not in caplog.text


@pytest.mark.parametrize("limit", [None])
def test_memory_budget_unknown_persists_nothing(monkeypatch, limit):
    import bigquant.cluster.kmeans as kmeans_mod

    monkeypatch.setattr(kmeans_mod, "memory_limit", lambda: limit)
    assert kmeans_mod._memory_budget() == 0
