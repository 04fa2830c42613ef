"""Atomic outputs: a run killed outright leaves temporaries that the next run removes."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bigquant.io.atomic import _HOST, STALE_AFTER, atomic_output, remove_stale_temporaries, temp_sibling

REPO = pathlib.Path(__file__).resolve().parents[2]

#: a writer that makes its temporary (and a spool beside it), says where, then waits to be killed
_WRITER = """
import pathlib, sys, time
from bigquant.io.atomic import atomic_output, temp_sibling
with atomic_output(pathlib.Path(sys.argv[1]), overwrite=False) as tmp:
    tmp.write_bytes(b"partial")
    spool = temp_sibling(tmp, "tiles")
    spool.write_bytes(b"tiles")
    print(tmp, spool, flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path):
    from bigquant import quantize

    target = tmp_path / "out.tif"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        left = [pathlib.Path(p) for p in proc.stdout.readline().split()]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert len(left) == 2 and all(p.exists() for p in left)  # nothing could clean up
    live = temp_sibling(target)  # a temporary of a run still going (this process)
    live.write_bytes(b"busy")
    other = tmp_path / ".out-other.tif"  # not a temporary of this target
    other.write_bytes(b"keep")

    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    quantize(img, target, 3, random_state=0, tile=16)
    assert target.exists()
    assert not any(p.exists() for p in left)
    assert live.read_bytes() == b"busy" and other.read_bytes() == b"keep"


def test_temporaries_of_other_machines_are_removed_only_when_old(tmp_path):
    target = tmp_path / "map.tif"
    foreign = "0" * 6 if _HOST != "0" * 6 else "1" * 6
    old = tmp_path / f".map.0123456789-{foreign}42.tmp.tif"
    young = tmp_path / f".map.abcdef0123-{foreign}42.tmp.tif"
    legacy = tmp_path / ".map.0123456789.tiles.tif"  # a name of an older release: no process in it
    for p in (old, young, legacy):
        p.write_bytes(b"x")
    past = time.time() - STALE_AFTER - 60
    for p in (old, legacy):
        os.utime(p, (past, past))
    assert sorted(remove_stale_temporaries(target)) == sorted([old, legacy])
    assert young.exists()
    with atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and young.exists()
