"""Tests of bigquant.pipeline.dither: tile-parallel Floyd-Steinberg equals the serial reference."""

from __future__ import annotations

import logging
import pathlib

import dask
import dask.array as da
import numpy as np
import pytest

from bigquant.errors import InputTypeError, InvalidParameterError
from bigquant.kernels.dither import floyd_steinberg
from bigquant.pipeline.dither import blue_noise_mask, check_dither, dither_labels, label_spool


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from bigquant.io.sample import make_sample_image

    return make_sample_image((150, 203), seed=4)


@pytest.fixture(scope="module")
def palette() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 3))


@pytest.fixture(scope="module")
def holes(photo) -> np.ndarray:
    rng = np.random.default_rng(1)
    valid = rng.random(photo.shape[:2]) > 0.05
    valid[40:70, 90:130] = False  # and a block straddling chunk edges
    return valid


# chunkings: square, wide, tall (rows > columns), irregular, tiny, one chunk
CHUNKINGS = [(32, 32), (16, 64), (64, 24), ((50, 60, 40), (70, 33, 100)), (7, 9), (150, 203)]


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
def test_floyd_steinberg_is_byte_identical_to_the_reference_for_any_chunking(photo, palette, chunks):
    reference = floyd_steinberg(photo, palette)
    data = da.from_array(photo, chunks=chunks + ((3,),) if isinstance(chunks[0], tuple) else chunks + (3,))
    labels = dither_labels(data, palette, dtype=np.uint8).compute(scheduler="threads")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, reference)



def test_the_largest_errors_survive_the_tiles_narrow_error_buffers():
    # a palette of black and white only, on saturated colours: every error is near its bound
    # (+-16 * 255 units), which the int16 buffers and edges of the tiled dither must hold exactly
    rng = np.random.default_rng(5)
    pixels = rng.choice(np.array([0, 255], dtype=np.uint8), size=(90, 110, 3))
    pixels[:, 40:60] = [255, 0, 0]
    palette = np.array([[0, 0, 0], [255, 255, 255]])
    reference = floyd_steinberg(pixels, palette)
    labels = dither_labels(da.from_array(pixels, chunks=(32, 40, 3)), palette).compute(scheduler="threads")
    np.testing.assert_array_equal(labels, reference)


@pytest.mark.parametrize("chunks", [(32, 32), (40, 70)], ids=str)
def test_floyd_steinberg_with_a_mask_is_byte_identical(photo, palette, holes, chunks):
    reference = floyd_steinberg(photo, palette, valid=holes, strength=0.75)
    data = da.from_array(photo, chunks=chunks + (3,))
    valid = da.from_array(holes, chunks=(45, 31))  # chunked unlike the pixels
    labels = dither_labels(data, palette, valid=valid, strength=0.75).compute()
    np.testing.assert_array_equal(labels[holes], reference[holes])
    # the mask changes the neighbours' labels (error is not passed across it)
    assert (floyd_steinberg(photo, palette, strength=0.75)[holes] != reference[holes]).any()


def _depends_on(labels: da.Array, name: str) -> bool:
    """Whether computing ``labels`` computes any task of the collection ``name``."""
    return any(isinstance(k, tuple) and k[0] == name for k in dict(labels.__dask_graph__()))


@pytest.mark.parametrize("chunks", [(32, 32), (16, 64), ((50, 60, 40), (70, 33, 100)), (7, 9)], ids=str)
def test_spooled_labels_are_the_reference_and_read_no_pixel_again(tmp_path, photo, palette, holes, chunks):
    reference = floyd_steinberg(photo, palette, valid=holes, strength=0.9)
    reference[~holes] = 12  # the label asked for masked pixels
    data = da.from_array(photo, chunks=chunks + ((3,),) if isinstance(chunks[0], tuple) else chunks + (3,))
    valid = da.from_array(holes, chunks=(45, 31))
    with label_spool(tmp_path / "out.tif") as spool:
        labels, sums = dither_labels(data, palette, valid=valid, strength=0.9, masked_label=12, spool=spool,
                                     with_sums=True)
        assert not _depends_on(labels, data.name)  # the second pass reads the spool, not the pixels
        assert any(p.suffix == ".npy" for p in spool.iterdir())
        np.testing.assert_array_equal(labels.compute(scheduler="threads"), reference)
        np.testing.assert_array_equal(labels[17:90, 33:150].compute(), reference[17:90, 33:150])
    assert not spool.exists()  # removed on exit
    for other in (None, "blue-noise"):  # only Floyd-Steinberg spools
        with label_spool(tmp_path / "out.tif", other) as nothing:
            assert nothing is None and not any(".spool" in p.name for p in tmp_path.iterdir())
    without = dither_labels(data, palette, valid=valid, strength=0.9, masked_label=12, with_sums=True)
    np.testing.assert_array_equal(without[1].astype(np.int64), sums.astype(np.int64))


def test_labels_are_computed_while_the_first_pass_runs_on(tmp_path, photo, palette, holes, monkeypatch):
    """Without ``wait``, chunks are put together as soon as their two slanted tiles are done: the first chunk
    of the first band is ready while the last band has not started; the sums come after, the same."""
    import threading

    import bigquant.pipeline.dither as dither

    data = da.from_array(photo, chunks=(32, 40, 3))
    valid = da.from_array(holes, chunks=(32, 40))
    reference = floyd_steinberg(photo, palette, valid=holes)
    reference[~holes] = 12
    last_band = threading.Event()
    real = dither._slanted_tile

    def held(*args, **kwargs):
        if args[6][0] == 128:  # band 4 (rows 128..150) waits until the first chunk is out
            assert last_band.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(dither, "_slanted_tile", held)
    with label_spool(tmp_path / "out.tif") as spool:
        labels, pass1 = dither_labels(data, palette, valid=valid, masked_label=12, spool=spool, with_sums=True,
                                      wait=False)
        first = labels.blocks[0, 0].compute()
        last_band.set()
        np.testing.assert_array_equal(first, reference[:32, :40])
        np.testing.assert_array_equal(labels.compute(), reference)
        sums = pass1.result()
    waited = dither_labels(data, palette, valid=valid, masked_label=12, with_sums=True)[1]
    np.testing.assert_array_equal(sums, waited)


def test_a_tile_the_spool_cannot_take_keeps_its_labels_in_memory(tmp_path, photo, palette, monkeypatch):
    import bigquant.pipeline.dither as dither

    real = dither._save_labels

    def full_disk(path, labels):
        if path.endswith("-2.npy"):  # every band's third tile
            raise OSError(28, "No space left on device")
        real(path, labels)

    monkeypatch.setattr(dither, "_save_labels", full_disk)
    data = da.from_array(photo, chunks=(32, 40, 3))
    with label_spool(tmp_path / "out.tif") as spool:
        labels = dither_labels(data, palette, spool=spool)
        assert not _depends_on(labels, data.name)
        assert not any(p.name.endswith("-2.npy") for p in spool.iterdir())
        np.testing.assert_array_equal(labels.compute(), floyd_steinberg(photo, palette))


@pytest.mark.parametrize("in_place", [False, True])
def test_a_failing_first_pass_fails_the_labels_and_can_be_stopped(tmp_path, photo, palette, monkeypatch, in_place):
    # in_place: pixels read in place (a raw tiled TIFF, as the fit's pixel spool): each tile reads its window
    import tifffile

    import bigquant.pipeline.dither as dither
    from bigquant.io.read import read_image

    real = dither._slanted_tile

    def broken(*args, **kwargs):
        if args[6][:3:2] == (64, 1):  # tile 1 of the band at row 64
            raise RuntimeError("tile lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(dither, "_slanted_tile", broken)
    if in_place:
        tifffile.imwrite(tmp_path / "raw.tif", photo, tile=(32, 32), photometric="rgb")
        data = read_image(tmp_path / "raw.tif", chunks=64).data
    else:
        data = da.from_array(photo, chunks=(32, 40, 3))
    with label_spool(tmp_path / "out.tif") as spool:
        labels, pass1 = dither_labels(data, palette, spool=spool, wait=False)
        with pytest.raises(RuntimeError, match="tile lost"):
            labels.compute()
        with pytest.raises(RuntimeError, match="tile lost"):
            pass1.result()
        pass1.cancel()  # over already: returns
    monkeypatch.setattr(dither, "_slanted_tile", real)
    with label_spool(tmp_path / "out.tif") as spool:
        labels, pass1 = dither_labels(data, palette, spool=spool, wait=False)
        pass1.cancel()  # stopped: no tile is posted after
        with pytest.raises(Exception):
            pass1.result()


@pytest.mark.parametrize("spooled", [True, False])
def test_pixels_read_in_place_are_read_by_each_tile_as_one_window(tmp_path, photo, palette, monkeypatch, spooled):
    """An uncompressed tiled TIFF (as the fit's pixel spool): every slanted tile reads its own window of the
    file, no chunk of pixels is a task of its own (none to move between workers); the labels are the same."""
    import tifffile

    import bigquant.pipeline.dither as dither
    from bigquant.io.read import read_image

    tifffile.imwrite(tmp_path / "raw.tif", photo, tile=(32, 32), photometric="rgb")
    data = read_image(tmp_path / "raw.tif", chunks=64).data
    windows = []
    real = dither._window
    monkeypatch.setattr(dither, "_window", lambda *args: windows.append(args[1:5]) or real(*args))
    with label_spool(tmp_path / "out.tif") as spool:
        labels = dither_labels(data, palette, spool=spool if spooled else None)
        np.testing.assert_array_equal(labels.compute(), floyd_steinberg(photo, palette))
    n_tiles = 5 + 5 + 4  # 150 x 203: bands of 64, 64 and 22 rows over 4 chunks of 64 columns
    assert len(windows) >= n_tiles and len(set(windows)) == n_tiles
    assert (0, 64, 0, 64) in windows and (128, 150, 128, 203) in windows  # chunk 0 alone; the last tile


def test_a_spool_the_workers_cannot_write_falls_back_to_dithering_again(tmp_path, photo, palette, caplog):
    data = da.from_array(photo, chunks=(32, 40, 3))
    missing = tmp_path / "not-there"  # as on a worker of another machine: no such directory
    with caplog.at_level(logging.INFO, logger="bigquant.pipeline.dither"):
        labels = dither_labels(data, palette, spool=missing)
    assert _depends_on(labels, data.name)
    assert "dithering again" in caplog.text
    np.testing.assert_array_equal(labels.compute(), floyd_steinberg(photo, palette))


def test_a_killed_runs_spool_is_removed_by_the_next_run(tmp_path):
    import subprocess
    import sys

    from bigquant.io.atomic import remove_stale_temporaries

    target = tmp_path / "out.tif"
    code = ("import pathlib, os; from bigquant.pipeline.dither import label_spool\n"
            f"cm = label_spool(pathlib.Path({str(target)!r})); p = cm.__enter__(); (p / 'a.npy').write_bytes(b'x')\n"
            "os._exit(0)  # killed: no cleanup\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    left = [p for p in tmp_path.iterdir() if ".spool" in p.name]
    assert len(left) == 1 and left[0].is_dir()
    assert remove_stale_temporaries(target) == left
    assert not left[0].exists()


@pytest.mark.parametrize("chunks", [(200, 37), (64, 37), (50, 20)], ids=str)
def test_a_tall_narrow_image_is_dithered_whatever_its_chunks(photo, palette, chunks):
    tall = np.ascontiguousarray(photo[:, :37].repeat(2, axis=0)[:200])  # 200 x 37: bands would be wider than it
    data = da.from_array(tall, chunks=chunks + (3,))
    np.testing.assert_array_equal(dither_labels(data, palette).compute(), floyd_steinberg(tall, palette))


def test_floyd_steinberg_single_threaded_and_synchronous_agree(photo, palette):
    data = da.from_array(photo, chunks=(48, 48, 3))
    with dask.config.set(scheduler="sync"):
        sync = dither_labels(data, palette).compute()
    np.testing.assert_array_equal(sync, floyd_steinberg(photo, palette))


@pytest.mark.distributed
def test_floyd_steinberg_on_worker_processes_is_byte_identical(tmp_path, local_cluster, photo, palette, holes):
    """Every pixel, masked ones included (they carry the label asked for), with and without a spool."""
    client = local_cluster
    data = da.from_array(photo, chunks=(32, 40, 3))
    valid = da.from_array(holes, chunks=(32, 40))
    reference = floyd_steinberg(photo, palette, valid=holes)
    reference[~holes] = 12  # the label asked for masked pixels
    with client.as_current():
        labels = dither_labels(data, palette, valid=valid, masked_label=12)
        result = client.compute(labels).result()
        seen = client.run_on_scheduler(
            lambda dask_scheduler: sum(1 for k in dask_scheduler.task_prefixes if str(k).startswith("bq-fs-"))
        )
        with label_spool(tmp_path / "out.tif") as spool:  # the workers share this machine's disk
            assert spool is not None
            spooled = dither_labels(data, palette, valid=valid, masked_label=12, spool=spool)
            assert not _depends_on(spooled, data.name)
            from_spool = client.compute(spooled).result()
    np.testing.assert_array_equal(result, reference)
    np.testing.assert_array_equal(from_spool, reference)
    assert seen >= 2  # both passes ran on the cluster


def test_dithered_gradient_has_no_seams_at_tile_edges():
    # a slow horizontal ramp between two close grey levels: any seam would show as a
    # column (or row) at a chunk edge whose density of the light colour differs from its neighbours
    x = np.linspace(100, 110, 256)
    ramp = np.repeat(np.round(np.tile(x, (192, 1)))[:, :, None], 3, axis=2).astype(np.uint8)
    colours = np.array([[100, 100, 100], [110, 110, 110]])
    data = da.from_array(ramp, chunks=(32, 64, 3))
    labels = dither_labels(data, colours).compute()
    np.testing.assert_array_equal(labels, floyd_steinberg(ramp, colours))
    # the density of the light colour follows the ramp, over every 8 columns (seams at
    # the chunk edges 64, 128, 192 would show as a window off the ramp) ...
    density = labels.mean(axis=0).reshape(-1, 8).mean(axis=1)
    expected = ((np.round(x) - 100) / 10).reshape(-1, 8).mean(axis=1)
    assert np.abs(density - expected).max() < 0.03
    rows = labels.mean(axis=1).reshape(-1, 8).mean(axis=1)
    assert rows.std() < 0.02  # ... and no band of rows (chunk edges 32, 64...) is lighter or darker
    # dithering each chunk on its own (errors lost at the edges) would not give these labels
    naive = np.block([[floyd_steinberg(ramp[y:y + 32, x:x + 64], colours) for x in range(0, 256, 64)]
                      for y in range(0, 192, 32)])
    assert (naive != labels).any()


def test_blue_noise_does_not_depend_on_chunks(photo, palette):
    a = dither_labels(da.from_array(photo, chunks=(32, 32, 3)), palette, method="blue-noise").compute()
    b = dither_labels(da.from_array(photo, chunks=(71, 150, 3)), palette, method="blue-noise").compute()
    np.testing.assert_array_equal(a, b)
    nearest = dither_labels(da.from_array(photo, chunks=(71, 150, 3)), palette, method="blue-noise",
                            strength=0.0).compute()
    assert (a != nearest).mean() > 0.05


def test_blue_noise_mask_is_a_permutation_with_little_low_frequency_energy():
    m = blue_noise_mask(32)
    assert sorted(m.ravel().tolist()) == list(range(32 * 32))
    np.testing.assert_array_equal(m, blue_noise_mask(32))  # deterministic
    spectrum = np.abs(np.fft.fft2((m < 512).astype(float) - 0.5)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32)))
    low, high = spectrum[(f > 0) & (f < 0.15)].mean(), spectrum[f > 0.35].mean()
    assert low < 0.25 * high  # blue: energy at high frequencies, not low


def test_bad_parameters_name_the_value(photo, palette):
    with pytest.raises(InvalidParameterError, match="dither='ordered'"):
        check_dither("ordered", 1.0)
    with pytest.raises(InvalidParameterError, match="dither_strength=1.5"):
        check_dither("floyd-steinberg", 1.5)
    data = da.from_array(photo)
    with pytest.raises(InvalidParameterError, match="3 band"):
        dither_labels(data, palette[:, :1])
    with pytest.raises(InputTypeError, match="float32"):
        dither_labels(data.astype(np.float32), palette)


def test_segments_paste_exactly_their_points_inside_the_buffer():
    """Rows, columns and anti-diagonals, partly or wholly outside the buffer: the points inside, no others."""
    from bigquant.pipeline.dither import _paste, _take

    rng = np.random.default_rng(7)
    origin = (5, -3)
    for _ in range(400):
        dy, dx = [(0, 1), (1, 0), (1, -1)][rng.integers(3)]
        n = int(rng.integers(1, 30))
        y, x = int(rng.integers(-10, 30)), int(rng.integers(-25, 30))
        vals = rng.integers(-500, 500, (n, 3)).astype(np.int16)
        got = np.zeros((12, 17, 3), np.int16)
        _paste(got, origin, [(y, x, dy, dx, vals)])
        want = np.zeros_like(got)
        for i in range(n):
            yy, xx = y + dy * i - origin[0], x + dx * i - origin[1]
            if 0 <= yy < 12 and 0 <= xx < 17:
                want[yy, xx] = vals[i]
        np.testing.assert_array_equal(got, want)
        if (want != 0).any() and all(0 <= y + dy * i - origin[0] < 12 and 0 <= x + dx * i - origin[1] < 17
                                     for i in (0, n - 1)):
            np.testing.assert_array_equal(_take(got, origin, y, x, dy, dx, n)[4], vals)
