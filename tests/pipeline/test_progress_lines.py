"""Terminal progress: the Lloyd line ends with the inertia the result reports."""

from __future__ import annotations

import io
import re

import numpy as np

from bigquant.cli import main
from bigquant.pipeline.progress import LloydProgress


def test_close_shows_the_final_inertia():
    out = io.StringIO()
    bar = LloydProgress(max_iter=100, stream=out, every=1)
    bar(1, 2000.0, 3.0)
    bar(2, 1500.0, 0.0)
    bar.close(1400.0)
    last = out.getvalue().strip().splitlines()[-1]
    assert "2 iterations" in last and "inertia 1400" in last


def test_cli_progress_and_result_report_the_same_inertia(tmp_path, capsys):
    from PIL import Image

    from bigquant.io.sample import make_sample_image

    src = tmp_path / "in.png"
    Image.fromarray(make_sample_image((96, 128), seed=5)).save(src)
    assert main(["quantize", str(src), str(tmp_path / "q.tif"), "-k", "6", "--random-state", "1",
                 "--no-cluster"]) == 0
    captured = capsys.readouterr()
    shown = [line for line in captured.err.splitlines() if line.startswith("lloyd")]
    reported = re.search(r"inertia ([0-9.e+]+)", captured.out).group(1)
    assert shown and re.search(r"inertia ([0-9.e+]+)", shown[-1]).group(1) == reported
    assert np.isfinite(float(reported))
