"""One request, checked in full before a pixel is read (bigquant.pipeline.request).

Each test is a case of issue #22's "Why": the input destroyed, a directory
deleted, a check after the work, a resumed sweep of another image, and the
one option model that the library, the set, the sweep and the CLI share.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import threading

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

import bigquant
from bigquant.cli import build_parser, main
from bigquant.errors import ImageWriteError, InvalidInputError, InvalidParameterError
from bigquant.pipeline.request import ENTRY_GROUPS, PYTHON_ONLY, option_names


def _tree(path):
    """Every file below ``path`` with its bytes: what 'nothing changed on disk' compares."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


class _Reads:
    """A lazy image that counts the chunks computed from it: a test that no pixel was read."""

    def __init__(self, shape, dtype=np.uint8, chunk=1024):
        self.count = 0
        self.lock = threading.Lock()
        zeros = da.zeros(shape, dtype=dtype, chunks=(chunk, chunk) + tuple(shape[2:]))
        self.data = zeros.map_blocks(self._read, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))

    def _read(self, block):
        with self.lock:
            self.count += 1
        return block


@pytest.fixture
def scene16(tmp_path):
    """A uint16 RGB TIFF, as the issue's scene.tif."""
    rng = np.random.default_rng(0)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, rng.integers(0, 4000, (64, 80, 3), dtype=np.uint16), photometric="rgb")
    return path


@pytest.fixture
def photo(tmp_path, rgb_image):
    path = tmp_path / "photo.png"
    Image.fromarray(rgb_image[:96, :128]).save(path)
    return path


# --------------------------------------------------------------------------- the input destroyed


def test_the_input_as_output_is_refused_and_untouched(tmp_path, scene16, capsys):
    before = scene16.read_bytes()
    code = main(["quantize", str(scene16), str(scene16), "-k", "8", "--overwrite", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "would destroy the input" in err and err.count("\n") == 1
    assert scene16.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_a_link_to_the_input_is_the_input(tmp_path, scene16, link):
    out = tmp_path / "out.tif"
    (os.link if link == "hard" else os.symlink)(scene16, out)
    before = scene16.read_bytes()
    with pytest.raises(InvalidParameterError, match="would destroy the input"):
        bigquant.quantize(scene16, out, 4, overwrite=True)
    assert scene16.read_bytes() == before


def test_an_extra_output_on_the_input_is_refused(tmp_path, photo):
    before = photo.read_bytes()
    for option in ("compare", "preview", "palette_out"):
        with pytest.raises(InvalidParameterError, match="would destroy the input"):
            bigquant.quantize(photo, tmp_path / "q.tif", 4, overwrite=True, **{option: photo})
    assert photo.read_bytes() == before and not (tmp_path / "q.tif").exists()


def test_a_set_written_over_its_inputs_is_refused(tmp_path, rgb_image):
    folder = tmp_path / "sheets"
    folder.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(folder / f"{name}.tif", rgb_image[:64, :64], photometric="rgb")
    before = _tree(folder)
    with pytest.raises(InvalidParameterError, match="would destroy the input"):
        bigquant.quantize_many([folder / "a.tif", folder / "b.tif"], folder, 4, overwrite=True)
    assert _tree(folder) == before


def test_a_mask_or_palette_file_is_an_input_too(tmp_path, photo):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((96, 128), 255, np.uint8)).save(mask)
    before = mask.read_bytes()
    with pytest.raises(InvalidParameterError, match="would destroy the input"):
        bigquant.quantize(photo, tmp_path / "q.tif", 4, mask=mask, preview=mask, overwrite=True)
    assert mask.read_bytes() == before


# --------------------------------------------------------------------------- a directory deleted


@pytest.mark.parametrize("name", ["precious.tif", "precious.zarr"])
def test_a_directory_at_the_output_path_is_never_replaced(tmp_path, photo, name, capsys):
    folder = tmp_path / name
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "thesis.txt").write_text("four years")
    code = main(["quantize", str(photo), str(folder), "-k", "4", "--overwrite", "--no-progress"])
    assert code == 1
    assert "directory that bigquant did not write" in capsys.readouterr().err
    assert (folder / "sub" / "thesis.txt").read_text() == "four years"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "photo.png"])


def test_a_zarr_store_of_our_own_is_replaced_with_overwrite(tmp_path, photo):
    import zarr

    out = tmp_path / "q.zarr"
    bigquant.quantize(photo, out, 4, random_state=0)
    with pytest.raises(ImageWriteError, match="output exists"):
        bigquant.quantize(photo, out, 8, random_state=0)
    bigquant.quantize(photo, out, 8, random_state=0, overwrite=True)
    assert len(zarr.open_array(str(out), mode="r").attrs["palette"]) == 8


def test_a_foreign_zarr_store_is_never_replaced(tmp_path, photo):
    import zarr

    out = tmp_path / "theirs.zarr"
    zarr.create_array(store=str(out), shape=(4, 4), dtype="u1", chunks=(4, 4))[:] = 7
    with pytest.raises(ImageWriteError, match="did not write"):
        bigquant.quantize(photo, out, 4, overwrite=True)
    assert (zarr.open_array(str(out), mode="r")[:] == 7).all()


# --------------------------------------------------------------------------- checks before the work


def test_a_jpeg_too_large_for_pillow_is_refused_before_a_pixel_is_read(tmp_path):
    side = int(np.sqrt(Image.MAX_IMAGE_PIXELS)) + 1024
    image = _Reads((side, side, 3))
    for dither in (None, "floyd-steinberg"):
        with pytest.raises(InvalidParameterError, match="too large for JPEG"):
            bigquant.quantize(image.data, tmp_path / "big.jpg", 16, mode="rgb", dither=dither)
    assert image.count == 0
    assert list(tmp_path.iterdir()) == []


def test_a_png_above_pillows_limit_is_written(tmp_path, monkeypatch):
    # PNG output is streamed: Pillow's limit (here lowered to 1000 px) refuses JPEG only
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    pixels = (np.random.default_rng(0).integers(0, 4, (48, 64, 3)) * 80).astype(np.uint8)
    model = bigquant.quantize(pixels, tmp_path / "big.png", 4, random_state=0)
    import imagecodecs

    back = imagecodecs.png_decode((tmp_path / "big.png").read_bytes())
    centres = np.asarray(model.cluster_centers_, dtype=np.float64)
    nearest = ((pixels[:, :, None, :] - centres) ** 2).sum(axis=3).argmin(axis=2)
    np.testing.assert_array_equal(back, np.rint(centres).astype(np.uint8)[nearest])
    with pytest.raises(InvalidParameterError, match="too large for JPEG"):
        bigquant.quantize(pixels, tmp_path / "big.jpg", 4, mode="rgb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


@pytest.mark.parametrize(("dtype", "args", "match"), [
    (np.uint8, ["-k", "300", "--palette-out", "p.act"], "holds at most 256 colours"),
    (np.uint16, ["-k", "8", "--palette-out", "p.gpl"], "8-bit colours"),
    (np.uint16, ["-k", "8", "--mode", "rgb", "--suffix-png"], "RGB-mode PNG"),
    (np.uint16, ["-k", "8", "--mode", "rgb", "--suffix-jpg"], "JPEG output needs 8-bit"),
    (np.uint8, ["-k", "8", "--suffix-jpg"], "JPEG holds no palette"),
])
def test_what_an_output_cannot_hold_is_refused_before_anything_is_written(tmp_path, capsys, dtype, args, match):
    rng = np.random.default_rng(1)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, rng.integers(0, 200, (32, 48, 3)).astype(dtype), photometric="rgb")
    suffix = ".tif"
    if "--suffix-png" in args or "--suffix-jpg" in args:
        suffix = ".png" if "--suffix-png" in args else ".jpg"
        args = [a for a in args if not a.startswith("--suffix")]
    args = [str(tmp_path / a) if a.startswith("p.") else a for a in args]
    code = main(["quantize", str(src), str(tmp_path / f"out{suffix}"), *args, "--no-progress"])
    assert code == 2
    assert match in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_outputs_are_refused_before_the_fit_in_the_library(tmp_path):
    image = _Reads((256, 256, 3), dtype=np.uint16, chunk=128)
    with pytest.raises(InvalidParameterError, match="RGB-mode PNG"):
        bigquant.quantize(image.data, tmp_path / "q.png", 8, mode="rgb")
    with pytest.raises(InvalidParameterError, match="8-bit colours"):
        bigquant.quantize(image.data, tmp_path / "q.tif", 8, palette_out=tmp_path / "p.act")
    with pytest.raises(InvalidParameterError, match="TIFF options"):
        bigquant.quantize(image.data, tmp_path / "q.zarr", 8, cog=True)
    with pytest.raises(InvalidParameterError, match="nbits=2 holds 4 palette indices, but 8"):
        bigquant.quantize(image.data, tmp_path / "q.tif", 8, nbits=2)
    with pytest.raises(InvalidParameterError, match="nbits=4 holds 16 palette indices, but 17"):
        bigquant.quantize(image.data, tmp_path / "q.tif", 8, nbits=4, nodata_index=16)
    with pytest.raises(InvalidParameterError, match="must be one of 1, 2, 4, 8, 16"):
        bigquant.quantize(image.data, tmp_path / "q.tif", 8, nbits=3)
    with pytest.raises(InvalidParameterError, match="stores colours"):
        bigquant.quantize(image.data, tmp_path / "q.tif", 8, nbits=8, mode="rgb")
    assert image.count == 0
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a resumed sweep of another image


def test_resuming_a_sweep_of_another_image_is_refused(tmp_path, rgb_image, capsys):
    a, b, csv = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "sweep.csv"
    Image.fromarray(rgb_image[:64, :64]).save(a)
    Image.fromarray(rgb_image[-64:, -64:]).save(b)
    assert main(["sweep", str(a), "--k", "2:4:2", "--out", str(csv), "-q", "--no-progress"]) == 0
    before = csv.read_bytes()
    code = main(["sweep", str(b), "--k", "2:8:2", "--out", str(csv), "--resume", "--space", "oklab", "-q",
                 "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "result of another job" in err and "b.png" in err and "space" in err
    assert csv.read_bytes() == before


def test_a_sweep_csv_without_provenance_is_not_resumed(tmp_path, rgb_image):
    csv = tmp_path / "old.csv"
    csv.write_text("k,cost,inertia,psnr,n_iter,seconds,palette\n2,1.0,1.0,30.0,3,0.1,0 0 0;1 1 1\n")
    with pytest.raises(InvalidInputError, match="does not record what it is of"):
        bigquant.sweep(rgb_image[:32, :32], "2:4:2", out=csv, resume_from=csv)


def test_a_resumed_sweep_goes_on_with_its_recorded_seed(tmp_path, rgb_image):
    image = rgb_image[:80, :80]
    whole = bigquant.sweep(image, "2:8:2", out=tmp_path / "whole.csv")
    seed = json.loads(whole.rows[0].provenance)["seed"]
    part = tmp_path / "part.csv"
    bigquant.sweep(image, "2:4:2", out=part, random_state=seed)
    resumed = bigquant.sweep(image, "2:8:2", out=part, resume_from=part)
    assert resumed.resumed == [2, 4]
    assert [r.palette for r in resumed.rows] == [r.palette for r in whole.rows]
    with pytest.raises(InvalidInputError, match="seed"):
        bigquant.sweep(image, "2:10:2", out=part, resume_from=part, random_state=seed + 1)


# --------------------------------------------------------------------------- one option model


def _cli_dests(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    return {a.dest for a in parser._actions if a.dest != "help"}


#: what only the command line has: its positional arguments, where it runs, how it talks
_CLI_ONLY = {"paths", "inputs", "ks", "out_dir", "verbose", "quiet", "scheduler", "workers", "threads",
             "memory_limit", "dashboard", "timeout", "no_cluster", "cluster", "no_progress", "plot", "resume",
             "tls_ca_file", "tls_cert", "tls_key"}


@pytest.mark.parametrize(("entry", "command"), [("quantize", "quantize"), ("quantize_many", "quantize"),
                                                ("sweep", "sweep")])
def test_the_command_line_spells_every_option_by_its_library_name(entry, command):
    options = set(option_names(entry))
    from bigquant.cli import CLI_ALIASES

    dests = _cli_dests(command) - _CLI_ONLY
    if command == "quantize":  # pngquant's and GDAL's spellings: each maps onto options of the model
        assert set(CLI_ALIASES) <= dests
        dests -= set(CLI_ALIASES)
        assert {name for names in CLI_ALIASES.values() for name in names} <= set(option_names("quantize_many"))
    if command == "quantize":  # one command for one image and for a set
        options = set(option_names("quantize")) | set(option_names("quantize_many"))
    if entry == "sweep":
        dests.add("resume_from")  # --resume: resume_from is --out
    assert dests - options == set()
    assert options - dests == set(PYTHON_ONLY) & options


@pytest.mark.parametrize("entry", sorted(ENTRY_GROUPS))
def test_the_library_takes_the_options_of_the_model(entry):
    function = {"quantize": bigquant.quantize, "quantize_many": bigquant.quantize_many,
                "sweep": bigquant.sweep}[entry]
    params = inspect.signature(function).parameters
    keyword = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keyword - {"client"} == set(option_names(entry)) - {"n_clusters"}


def test_shared_options_have_one_name_and_one_default():
    defaults: dict[str, object] = {}
    for entry in ENTRY_GROUPS:
        function = {"quantize": bigquant.quantize, "quantize_many": bigquant.quantize_many,
                    "sweep": bigquant.sweep}[entry]
        for name, p in inspect.signature(function).parameters.items():
            if p.default is not inspect.Parameter.empty and name in defaults:
                assert defaults[name] == p.default, name
            defaults.setdefault(name, p.default)


def test_an_unknown_option_names_the_closest_one(tmp_path, rgb_image):
    with pytest.raises(InvalidParameterError, match="did you mean dither"):
        bigquant.quantize(rgb_image, tmp_path / "q.tif", 4, ditehr="floyd-steinberg")
    with pytest.raises(InvalidParameterError, match="not an option of sweep"):
        bigquant.sweep(rgb_image, "2:4:2", preview=tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []
