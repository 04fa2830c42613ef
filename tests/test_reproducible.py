"""The same command twice writes the same bytes (issue #23: reproducible by default).

``random_state=None`` in :func:`bigquant.quantize`, :func:`bigquant.quantize_many`,
:func:`bigquant.sweep` and the command line is the fixed seed 0
(``bigquant.pipeline.request.DEFAULT_SEED``), logged and recorded; the
estimators keep scikit-learn's meaning (fresh randomness).
"""

from __future__ import annotations

import filecmp
import json
import logging

import numpy as np
import pytest
import tifffile
from PIL import Image

import bigquant
from bigquant.cli import main
from bigquant.pipeline.request import DEFAULT_SEED


def _photo(shape=(160, 200)) -> np.ndarray:
    """Smooth colour fields with noise: many distinct colours, as a photo has."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = np.stack([128 + 100 * np.sin(xx / 13.0), 128 + 100 * np.cos(yy / 11.0),
                    128 + 100 * np.sin((xx + yy) / 17.0)], axis=-1)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def _no_timestamps(path) -> None:
    """Nothing in a written file that changes from run to run: no TIFF DateTime, no PNG tIME / dated text."""
    if path.suffix == ".tif":
        with tifffile.TiffFile(path) as tf:
            for page in tf.pages:
                assert "DateTime" not in page.tags
                software = page.tags.get("Software")
                assert software is None or not any(ch.isdigit() for ch in str(software.value))
    else:
        data = path.read_bytes()
        assert b"tIME" not in data
        info = Image.open(path).info
        assert not any("date" in str(key).lower() or "time" in str(key).lower() for key in info)


def _same_json(a, b) -> None:
    """Two palette JSONs equal but for the wall-clock seconds they took and the output they name."""
    one, two = json.loads(a.read_text()), json.loads(b.read_text())
    for doc in (one, two):
        doc.pop("seconds", None)
        doc.pop("output", None)
    assert one == two


@pytest.mark.parametrize("kind", ["uint8", "uint16"])
def test_the_same_command_twice_writes_the_same_bytes(tmp_path, capsys, kind):
    src = tmp_path / f"in-{kind}.tif"
    img = _photo()
    tifffile.imwrite(src, img if kind == "uint8" else img.astype(np.uint16) * 16 + 100, photometric="rgb",
                     tile=(64, 64))
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        code = main(["quantize", str(src), str(out / "q.tif"), "-k", "6", "--tile", "64", "--cog",
                     "--preview", str(out / "p.png"), "--palette-out", str(out / "p.json"),
                     "--no-cluster", "--no-progress"])
        assert code == 0, capsys.readouterr().err
        runs.append(out)
    a, b = runs
    for name in ("q.tif", "p.png"):
        assert filecmp.cmp(a / name, b / name, shallow=False), name
        _no_timestamps(a / name)
    _same_json(a / "p.json", b / "p.json")
    assert json.loads((a / "p.json").read_text())["random_state"] == DEFAULT_SEED == 0


def test_two_quantize_calls_write_the_same_bytes(tmp_path, caplog):
    img = _photo()
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    with caplog.at_level(logging.INFO, logger="bigquant"):
        for out in outs:
            bigquant.quantize(img, out, 6, palette_out=out.with_suffix(".json"))
    assert filecmp.cmp(*outs, shallow=False)
    _no_timestamps(outs[0])
    _same_json(*(o.with_suffix(".json") for o in outs))
    assert "the default seed 0" in caplog.text
    assert json.loads(outs[0].with_suffix(".json").read_text())["random_state"] == 0
    # the default is a seed like any other: random_state=0 writes the same file
    bigquant.quantize(img, tmp_path / "c.png", 6, random_state=0)
    assert filecmp.cmp(outs[0], tmp_path / "c.png", shallow=False)
    # ... while the estimator keeps scikit-learn's None: fresh randomness each fit
    X = np.random.default_rng(2).normal(size=(400, 3))
    starts = {tuple(bigquant.KMeans(5, init="random", max_iter=1).fit(X).cluster_centers_.ravel().round(9))
              for _ in range(4)}
    assert len(starts) > 1


def test_a_set_and_a_sweep_default_to_the_seed_0(tmp_path, capsys):
    img = _photo()
    other = np.ascontiguousarray(img[::-1])
    outs = []
    for run in ("a", "b"):
        result = bigquant.quantize_many([img, other], tmp_path / run, 5, suffix=".png",
                                        palette_out=tmp_path / f"{run}.json")
        outs.append(result)
    for name in ("image0.png", "image1.png"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False)
    assert json.loads((tmp_path / "a.json").read_text())["random_state"] == 0
    sweeps = [bigquant.sweep(img, "2:6:2", out=tmp_path / f"s{i}.csv") for i in range(2)]
    assert json.loads(sweeps[0].rows[0].provenance)["seed"] == 0
    assert [r.palette for r in sweeps[0].rows] == [r.palette for r in sweeps[1].rows]
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    capsys.readouterr()
    assert main(["-v", "quantize", str(src), str(tmp_path / "v.png"), "-k", "4", "--no-cluster",
                 "--no-progress"]) == 0
    assert "the default seed 0" in capsys.readouterr().err
