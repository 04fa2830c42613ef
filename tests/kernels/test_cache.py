"""numba's on-disk cache of the kernels: two processes compiling at once leave a cache a third loads."""

from __future__ import annotations

import os
import subprocess
import sys

CALL = (
    "import numpy as np\n"
    "from bigquant import kernels\n"
    "kernels.squared_shift(np.zeros((2, 3)), np.ones((2, 3)))\n"
    "stats = kernels.squared_shift.stats\n"
    "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
)


def test_concurrent_compiles_leave_a_cache_the_next_process_loads(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    both = [subprocess.Popen([sys.executable, "-c", CALL], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = []
    for proc in both:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outcomes.append(out.split())
    # the first compiled (an empty cache); the other compiled too or, started late, loaded its entry
    assert ["0", "1"] in outcomes and all(o in (["0", "1"], ["1", "0"]) for o in outcomes)
    third = subprocess.run([sys.executable, "-c", CALL], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    assert third.stdout.split() == ["1", "0"]  # loaded, not compiled
    assert not list((tmp_path / "cache").rglob("*.tmp.*"))  # no half-written entry left
