"""Class values where GIS users look: a raster attribute table beside every palette TIFF (issue #23).

GDAL itself reads every table back (its C API through ctypes on the libgdal
rasterio bundles, :mod:`tests.support.gdal`); the counts are checked against
the labels actually written, the colours against the colormap rasterio reads.
"""

from __future__ import annotations

import pathlib
import threading

import dask.array as da
import numpy as np
import pytest
import rasterio
import tifffile
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

import bigquant
from bigquant.cli import main
from bigquant.errors import ImageWriteError
from bigquant.io.geotiff import GeoTiff
from bigquant.io.rat import area_unit, band_descriptions, class_table, pixel_area, rat_path
from bigquant.io.sample import make_sample_image

from tests.support.gdal import gdalinfo_json, read_rat, row_of_value

pytestmark = pytest.mark.filterwarnings(f"ignore::{NotGeoreferencedWarning.__module__}.NotGeoreferencedWarning")

# GDALRATFieldType / GDALRATFieldUsage
INTEGER, REAL, STRING = 0, 1, 2
GENERIC, PIXEL_COUNT, NAME, MIN_MAX, RED, GREEN, BLUE, ALPHA = 0, 1, 2, 5, 6, 7, 8, 9


def _written(path: pathlib.Path) -> np.ndarray:
    """The labels a TIFF holds."""
    return tifffile.imread(path)


def _floats(values: list[str]) -> np.ndarray:
    return np.array([float(v) for v in values])


@pytest.fixture
def photo() -> np.ndarray:
    return make_sample_image((96, 112), seed=1)


@pytest.fixture
def geo_scene(tmp_path, photo):
    """A GeoTIFF written by GDAL (rasterio): UTM 33N, 10 m pixels, band descriptions, nodata 0 on a corner."""

    def make(crs: str = "EPSG:32633", size: float = 10.0, descriptions=("red", "green", "nir & <b>")):
        path = tmp_path / "in" / f"scene-{crs.replace(':', '')}.tif"
        path.parent.mkdir(exist_ok=True)
        data = np.moveaxis(photo, 2, 0).copy()
        data[data == 0] = 1
        data[:, :16, :24] = 0  # the only pixels with 0 in every band: nodata
        with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                           dtype="uint8", crs=crs, transform=Affine(size, 0, 500000, 0, -size, 4000000),
                           nodata=0, tiled=True, blockxsize=32, blockysize=32) as dst:
            dst.write(data)
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
        return path

    return make


# --------------------------------------------------------------------------- what GDAL reads


def test_gdal_reads_each_class_with_its_centre_count_and_colour(tmp_path, photo):
    out = tmp_path / "q.tif"
    model = bigquant.quantize(photo, out, 6, random_state=0, tile=32)
    rat = read_rat(out)
    assert rat is not None and rat.thematic
    assert rat.columns == [
        ("Value", INTEGER, MIN_MAX), ("Class_Name", STRING, NAME),
        ("Band_1", REAL, GENERIC), ("Band_2", REAL, GENERIC), ("Band_3", REAL, GENERIC),
        ("Count", REAL, PIXEL_COUNT),
        ("Red", INTEGER, RED), ("Green", INTEGER, GREEN), ("Blue", INTEGER, BLUE), ("Alpha", INTEGER, ALPHA),
    ]
    assert rat.column("Value") == [str(i) for i in range(6)]
    assert rat.column("Class_Name") == [f"class {i}" for i in range(6)]
    palette = model.palette()[0]
    centres = np.stack([_floats(rat.column(f"Band_{b}")) for b in (1, 2, 3)], axis=1)
    np.testing.assert_array_equal(centres, palette)
    labels = _written(out)
    np.testing.assert_array_equal(_floats(rat.column("Count")), np.bincount(labels.ravel(), minlength=6))
    with rasterio.open(out) as src:
        shown = [src.colormap(1)[i] for i in range(6)]
    assert [tuple(int(v) for v in row[-4:]) for row in rat.rows] == shown
    assert [row_of_value(out, i) for i in range(6)] == list(range(6))


@pytest.mark.parametrize("cog", [False, True])
@pytest.mark.parametrize(("crs", "size", "unit"), [("EPSG:32633", 10.0, "m"), ("EPSG:2263", 3.0, "ftUS")])
def test_a_georeferenced_scene_gets_areas_band_names_and_a_nodata_row(tmp_path, geo_scene, cog, crs, size, unit):
    src = geo_scene(crs, size)
    out = tmp_path / "classes.tif"
    bigquant.quantize(src, out, 5, random_state=0, tile=32, cog=cog)
    rat = read_rat(out)
    assert rat is not None
    area = f"Area_{unit}2"
    assert rat.names == ["Value", "Class_Name", "red", "green", "nir & <b>", "Count", area,
                         "Red", "Green", "Blue", "Alpha"]
    labels = _written(out)
    with rasterio.open(out) as ds:
        nodata = int(ds.nodata)
        assert ds.crs.to_epsg() == int(crs.split(":")[1])
        assert ds.res == (size, size)
        colormap = ds.colormap(1)
    assert rat.column("Value") == [str(i) for i in range(5)] + [str(nodata)]
    assert rat.column("Class_Name")[-1] == "nodata"
    assert rat.column("Alpha") == ["255"] * 5 + ["0"]
    counts = np.bincount(labels.ravel(), minlength=nodata + 1)[list(range(5)) + [nodata]]
    assert counts[-1] == 16 * 24
    np.testing.assert_array_equal(_floats(rat.column("Count")), counts)
    np.testing.assert_allclose(_floats(rat.column(area)), counts * size * size)
    assert [tuple(int(v) for v in row[-4:-1]) for row in rat.rows[:5]] == [colormap[i][:3] for i in range(5)]
    assert row_of_value(out, nodata) == 5
    assert rat.rows[-1][2:5] == ["0", "0", "0"]  # no centre, and no NaN: gdalinfo -json stays JSON
    info = gdalinfo_json(out)  # gdalinfo -json lists band 1's table at the top, and the sidecar among the files
    assert str(rat_path(out)) in info["files"]
    assert info["bands"][0]["noDataValue"] == nodata
    assert info["rat"]["tableType"] == "thematic"
    assert [field["name"] for field in info["rat"]["fieldDefn"]] == rat.names
    assert [row["f"][rat.names.index("Count")] for row in info["rat"]["row"]] == counts.tolist()


@pytest.mark.parametrize("options", [{"space": "oklab"}, {"quality": 25, "n_clusters": None}, {"chunks": 32}])
def test_counts_are_those_of_the_labels_written_by_every_histogram_path(tmp_path, photo, options):
    """A fit in OKLab, k chosen for a PSNR, a lazily read image mapped by the lookup table: exact counts."""
    out = tmp_path / "q.tif"
    bigquant.quantize(photo, out, **{"n_clusters": 5, **options}, random_state=0, tile=32)
    rat = read_rat(out)
    labels = _written(out)
    np.testing.assert_array_equal(_floats(rat.column("Count")), np.bincount(labels.ravel(), minlength=len(rat.rows)))


@pytest.mark.parametrize(("kind", "options"), [
    ("uint16", {}),  # fitted on a value grid, not exact colours
    ("uint8", {"strategy": "pixels", "chunks": 32}),
    ("uint8", {"palette": [[0, 0, 0], [90, 90, 90], [200, 200, 200], [255, 255, 255]], "chunks": 32}),
    ("uint8", {"dither": "blue-noise"}),
    ("uint8", {"dither": "floyd-steinberg", "nodata_index": 9}),
])
def test_without_the_histogram_the_labels_are_counted_as_they_are_written(tmp_path, photo, kind, options):
    """No colour histogram (16-bit data, the pixel strategy, a palette applied) or dithered labels: the
    workers count each chunk's labels while they encode its tiles, in the write pass itself."""
    data = photo.astype(np.uint16) * 257 if kind == "uint16" else photo.copy()
    if "nodata_index" in options:
        data[:8, :8] = 0
        valid = np.ones(data.shape[:2], bool)
        valid[:8, :8] = False
        options = dict(options, mask=valid)
    out = tmp_path / "q.tif"
    k = None if "palette" in options else 4
    model = bigquant.quantize(data, out, k, random_state=0, tile=32, **options)
    rat = read_rat(out)
    labels = _written(out)
    values = [int(v) for v in rat.column("Value")]
    np.testing.assert_array_equal(_floats(rat.column("Count")),
                                  np.bincount(labels.ravel(), minlength=max(values) + 1)[values])
    assert values == list(range(4)) + ([9] if "nodata_index" in options else [])
    centres = np.stack([_floats(rat.column(f"Band_{b}")) for b in (1, 2, 3)], axis=1)[:4]
    np.testing.assert_array_equal(centres, model.palette()[0] if k else np.asarray(options["palette"]))
    with rasterio.open(out) as src:  # 16-bit colours: GDAL shows them divided by 257
        assert [tuple(int(v) for v in row[-4:]) for row in rat.rows[:4]] == [src.colormap(1)[i] for i in range(4)]


def test_the_write_pass_counts_what_it_writes_and_nothing_more(tmp_path, photo):
    """The label counts come from the pass that writes: the source's chunks are computed once each."""
    reads = _Reads(photo.astype(np.uint16))
    out = tmp_path / "q.tif"
    bigquant.quantize(reads.data, out, palette=[[0, 0, 0], [30000, 30000, 30000], [65535, 65535, 65535]],
                      tile=32)
    n_chunks = int(np.prod(reads.data.numblocks))
    assert reads.count == n_chunks
    assert sum(float(c) for c in read_rat(out).column("Count")) == photo.shape[0] * photo.shape[1]


def test_each_file_of_a_set_gets_its_own_counts(tmp_path, photo):
    images = [photo, np.ascontiguousarray(photo[::-1, ::2])]
    out = tmp_path / "set" / "not-yet"
    bigquant.quantize_many(images, out, 4, random_state=0, tile=32)
    for i in range(2):
        path = out / f"image{i}.tif"
        rat = read_rat(path)
        assert rat is not None
        np.testing.assert_array_equal(_floats(rat.column("Count")),
                                      np.bincount(_written(path).ravel(), minlength=4))


# --------------------------------------------------------------------------- an output like the others


class _Reads:
    """A lazy image that counts the chunks computed from it."""

    def __init__(self, image: np.ndarray):
        self.count = 0
        self.lock = threading.Lock()
        self.data = da.from_array(image, chunks=(32, 32, 3)).map_blocks(
            self._read, dtype=image.dtype, meta=np.empty((0, 0, 0), image.dtype))

    def _read(self, block):
        with self.lock:
            self.count += 1
        return block


def test_an_existing_table_is_refused_before_a_pixel_is_read(tmp_path, photo):
    sidecar = tmp_path / "q.tif.aux.xml"
    sidecar.write_text("<PAMDataset/>")
    reads = _Reads(photo)
    with pytest.raises(ImageWriteError, match=r"q\.tif\.aux\.xml: output exists"):
        bigquant.quantize(reads.data, tmp_path / "q.tif", 4, random_state=0, tile=32)
    assert reads.count == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.tif.aux.xml"]
    assert sidecar.read_text() == "<PAMDataset/>"


def test_overwrite_replaces_the_table(tmp_path, photo):
    out = tmp_path / "q.tif"
    rat_path(out).write_text("<PAMDataset/>")
    bigquant.quantize(photo, out, 3, random_state=0, tile=32, overwrite=True)
    assert len(read_rat(out).rows) == 3


@pytest.mark.parametrize("options", [{"rat": False}, {"mode": "rgb"}])
def test_no_table_without_classes_or_when_turned_off(tmp_path, photo, options):
    out = tmp_path / "q.tif"
    bigquant.quantize(photo, out, 4, random_state=0, tile=32, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.tif"]
    assert read_rat(out) is None


def test_a_failed_table_leaves_no_half_written_file(tmp_path, photo, monkeypatch):
    def half(self, text, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half)
    with pytest.raises(ImageWriteError, match="No space left"):
        bigquant.quantize(photo, tmp_path / "q.tif", 4, random_state=0, tile=32)
    assert not (tmp_path / "q.tif.aux.xml").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert (tmp_path / "q.tif").exists()  # written, complete, before its table


def test_overwriting_without_a_table_warns_of_the_old_one(tmp_path, photo, caplog):
    out = tmp_path / "q.tif"
    bigquant.quantize(photo, out, 3, random_state=0, tile=32)
    before = rat_path(out).read_bytes()
    with caplog.at_level("WARNING", logger="bigquant"):
        bigquant.quantize(photo, out, 5, random_state=0, tile=32, overwrite=True, rat=False)
    assert rat_path(out).read_bytes() == before
    assert any("q.tif.aux.xml: left as it was" in r.getMessage() for r in caplog.records)


def test_a_failed_image_leaves_no_table(tmp_path, photo):
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][:2] == (1, 1):
            raise RuntimeError("worker died")
        return block

    bad = da.from_array(photo, chunks=(32, 32, 3)).map_blocks(boom, dtype=photo.dtype)
    palette = np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]], dtype=np.uint8)
    with pytest.raises(RuntimeError, match="worker died"):
        bigquant.quantize(bad, tmp_path / "q.tif", palette=palette, tile=32)
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_writes_the_table_and_no_rat_turns_it_off(tmp_path, geo_scene, capsys):
    src = geo_scene()
    out = tmp_path / "q.tif"
    assert main(["quantize", str(src), str(out), "-k", "4", "--random-state", "0", "--no-progress"]) == 0
    assert f"wrote {rat_path(out)}" in capsys.readouterr().out
    assert read_rat(out) is not None
    off = tmp_path / "off.tif"
    assert main(["quantize", str(src), str(off), "-k", "4", "--no-rat", "--no-progress"]) == 0
    assert not rat_path(off).exists() and read_rat(off) is None


# --------------------------------------------------------------------------- the pieces


def test_band_descriptions_as_gdal_wrote_them(tmp_path, geo_scene):
    with tifffile.TiffFile(geo_scene(descriptions=("red", "", "nir & <b>"))) as tf:
        assert band_descriptions(tf.pages[0]) == ("red", None, "nir & <b>")
    bogus = tmp_path / "bogus.tif"  # a description of a sample the image lacks: not a billion-entry tuple
    tifffile.imwrite(bogus, np.zeros((8, 8), np.uint8), metadata=None, extratags=[
        (42112, 2, 0, '<GDALMetadata><Item name="DESCRIPTION" sample="999999999" role="description">x</Item>'
                      '<Item name="DESCRIPTION" sample="0" role="description">grey</Item></GDALMetadata>', True)])
    with tifffile.TiffFile(bogus) as tf:
        assert band_descriptions(tf.pages[0]) == ("grey",)
    xml = class_table(np.zeros((2, 3)), np.zeros((2, 3), np.uint8), band_names=("red", None, "nir"))
    assert "<Name>Band_1</Name>" in xml and "<Name>red</Name>" not in xml  # all named, or none


def test_pixel_area_and_unit_from_the_geokeys(geo_scene):
    with tifffile.TiffFile(geo_scene("EPSG:4326", 0.5)) as tf:
        geo = GeoTiff.from_page(tf.pages[0])
    assert pixel_area(geo) == 0.25 and area_unit(geo) == "deg"
    turned = GeoTiff(((34264, 12, 16, (0.0, 2.0, 0, 100.0, -3.0, 0.0, 0, 50.0) + (0.0,) * 8),))
    assert pixel_area(turned) == 6.0 and area_unit(turned) is None
    assert pixel_area(GeoTiff(((33550, 12, 3, (10.0, 20.0, 0.0)),))) == 200.0
    assert pixel_area(None) is None and pixel_area(GeoTiff(((33922, 12, 6, (0.0,) * 6),))) is None


@pytest.mark.distributed
def test_worker_processes_count_the_labels_they_write(local_cluster, tmp_path, photo):
    """On a cluster of worker processes the counts travel back with the encoded tiles."""
    path = tmp_path / "in16.tif"
    tifffile.imwrite(path, photo.astype(np.uint16) * 257, tile=(32, 32), photometric="rgb")
    out = tmp_path / "q.tif"
    bigquant.quantize(path, out, 4, random_state=0, tile=32, client=local_cluster)
    labels = _written(out)
    np.testing.assert_array_equal(_floats(read_rat(out).column("Count")), np.bincount(labels.ravel(), minlength=4))
