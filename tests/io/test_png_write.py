"""Tests of bigquant.io.png_write: PNG of any size, streamed a band of tile rows at a time.

The files are read back by Pillow, by imagecodecs (libpng) and by a
pngcheck-style parser here (chunk CRCs, chunk order, IHDR fields, the IDAT
stream inflating to exactly the filtered rows).  Memory is bounded
structurally (:class:`_Streamed`): the writer takes the image one band of tile
rows at a time, lets go of each band before it asks for the next, and at most
three bands are computed ahead of it; and tracemalloc's peak while writing a
lazy image does not grow with the image's height (Pillow's whole-image write
held every pixel).
"""

from __future__ import annotations

import gc
import struct
import tracemalloc
import weakref
import zlib

import dask
import dask.array as da
import imagecodecs
import numpy as np
import pytest
from PIL import Image

from bigquant import write_image
from bigquant.errors import InputTypeError, InvalidParameterError
from bigquant.io import tiff_write
from bigquant.io.encode import Codec

#: A lazy image's size here: an odd width (a partial last byte at 1, 2, 4 bits,
#: a narrower last chunk) and an odd number of rows (a short last band)
HEIGHT, WIDTH = 4099, 1001
CHUNKS = ((64,) * 64 + (3,), (512, 489))


def _lazy(seed: int, dtype, high: int, samples: tuple[int, ...] = (), chunks=CHUNKS,
          computed: list | None = None) -> da.Array:
    """A lazy image of random values below ``high``: each chunk drawn from its own seed
    (and, with ``computed``, its location appended there each time it is computed)."""

    def block(block_info=None):
        info = block_info[None]
        if computed is not None:
            computed.append(info["chunk-location"])
        (y0, y1), (x0, x1) = info["array-location"][:2]
        rng = np.random.default_rng([seed, y0, x0])
        # runs of equal values, as quantized images have: compressible but not trivially
        runs = rng.integers(0, high, (y1 - y0, (x1 - x0 + 6) // 7) + samples, dtype=dtype)
        return np.repeat(runs, 7, axis=1)[:, : x1 - x0]

    return da.map_blocks(block, dtype=dtype, chunks=chunks + tuple((s,) for s in samples),
                         meta=np.empty((0,) * (2 + len(samples)), dtype))


class _Streamed:
    """Watches the writer take its bands from ``compute_bands`` (patched here).

    Records, each time the writer asks for a band, how many of the bands
    handed to it before it still holds (weak references to the only copies it
    was given; arrays are freed by reference counting, no collection needed)
    and how many chunks of the source were computed by then.
    """

    def __init__(self, monkeypatch, computed: list):
        self.computed = computed
        self.handed: list[weakref.ref] = []
        self.still_held: list[int] = []
        self.computed_by_band: list[int] = []
        real = tiff_write.compute_bands

        def watched(*args, **kwargs):
            for band in real(*args, **kwargs):
                self.still_held.append(sum(ref() is not None for ref in self.handed))
                self.computed_by_band.append(len(self.computed))
                mine = [(np.array(rows), subs) for rows, subs in band]  # the writer's only references
                self.handed.extend(weakref.ref(rows) for rows, _ in mine)
                del band
                yield mine
                del mine
            self.still_held.append(sum(ref() is not None for ref in self.handed))

        monkeypatch.setattr(tiff_write, "compute_bands", watched)

    def check(self, chunks=CHUNKS) -> None:
        n_bands, per_band = len(chunks[0]), len(chunks[1])
        assert len(self.computed_by_band) == n_bands  # band after band
        assert self.still_held == [0] * (n_bands + 1)  # each let go before the next is asked for
        for i, n in enumerate(self.computed_by_band):  # band i handed over: at most 3 more computed
            assert n <= (i + 4) * per_band, (i, n)
        assert len(self.computed) == n_bands * per_band  # every chunk once
        assert len(set(self.computed)) == len(self.computed)


def _write_measured(data, path, **kwargs) -> int:
    """Write ``data`` with :func:`write_image`; return tracemalloc's peak (bytes) meanwhile."""
    gc.collect()
    tracemalloc.start()
    try:
        write_image(data, path, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """pngcheck's structural checks: signature, every chunk's length and CRC, chunk order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out = []
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert len(body) == n, f"chunk {kind!r} truncated"
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        out.append((kind, body))
        pos += 12 + n
    assert pos == len(data)
    kinds = [k for k, _ in out]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and out[-1][1] == b""
    first, last = kinds.index(b"IDAT"), len(kinds) - 1 - kinds[::-1].index(b"IDAT")
    assert set(kinds[first : last + 1]) == {b"IDAT"}, "IDAT chunks must be consecutive"
    for before in (b"PLTE", b"tRNS", b"pHYs", b"iCCP"):
        if before in kinds:
            assert kinds.index(before) < first
    if b"tRNS" in kinds:
        assert kinds.index(b"PLTE") < kinds.index(b"tRNS")
    return out


def _ihdr(chunks) -> dict[str, int]:
    width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    return dict(width=width, height=height, bit_depth=depth, colour_type=ctype,
                compression=comp, filter=filt, interlace=interlace)


def _body(chunks, kind: bytes) -> bytes | None:
    found = [b for k, b in chunks if k == kind]
    return found[0] if found else None


def _idat_rows(chunks, height: int, row_bytes: int) -> np.ndarray:
    """The IDAT stream inflated: exactly ``height`` rows of a filter byte and ``row_bytes``."""
    stream = zlib.decompressobj()
    raw = stream.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert stream.eof and not stream.unused_data
    assert len(raw) == height * (1 + row_bytes)
    return np.frombuffer(raw, np.uint8).reshape(height, 1 + row_bytes)


def _unfilter(filtered: np.ndarray, bpp: int) -> np.ndarray:
    """The PNG specification's reconstruction (filters 0-4), row by row, byte by byte."""
    height, n = filtered.shape[0], filtered.shape[1] - 1
    out = np.zeros((height, n), np.int64)
    for y in range(height):
        kind, row = int(filtered[y, 0]), filtered[y, 1:].astype(np.int64)
        up = out[y - 1] if y else np.zeros(n, np.int64)
        if kind == 0:
            out[y] = row
        elif kind == 2:
            out[y] = (row + up) % 256
        else:
            for x in range(n):
                a = out[y, x - bpp] if x >= bpp else 0
                b, c = up[x], (up[x - bpp] if x >= bpp else 0)
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                out[y, x] = (row[x] + pred) % 256
    return out.astype(np.uint8)


def _packed(indices: np.ndarray, bits: int) -> np.ndarray:
    """Indices packed most significant bits first, each row padded to whole bytes."""
    h, w = indices.shape
    per = 8 // bits
    padded = np.zeros((h, -(-w // per) * per), np.uint8)
    padded[:, :w] = indices
    groups = padded.reshape(h, -1, per).astype(np.uint16)
    shifts = 8 - bits * (np.arange(per) + 1)
    return (groups << shifts).sum(axis=2).astype(np.uint8)


# --------------------------------------------------------------------------- palettes


@pytest.mark.parametrize(("k", "bits"), [(2, 1), (4, 2), (16, 4), (256, 8)])
def test_palette_bit_depth_follows_k_and_round_trips_streamed(tmp_path, monkeypatch, k, bits):
    rng = np.random.default_rng(k)
    colours = rng.integers(0, 256, (k, 3)).astype(np.uint8)
    computed: list = []
    lazy = _lazy(k, np.uint8, k, computed=computed)
    streamed = _Streamed(monkeypatch, computed)
    write_image(lazy, tmp_path / "q.png", palette=colours, tile=64, preview=tmp_path / "p.png", preview_size=256)
    streamed.check()
    labels = lazy.compute()
    data = (tmp_path / "q.png").read_bytes()
    chunks = _chunks(data)
    assert _ihdr(chunks) == dict(width=WIDTH, height=HEIGHT, bit_depth=bits, colour_type=3,
                                 compression=0, filter=0, interlace=0)
    np.testing.assert_array_equal(np.frombuffer(_body(chunks, b"PLTE"), np.uint8).reshape(-1, 3), colours)
    assert _body(chunks, b"tRNS") is None
    rows = _idat_rows(chunks, HEIGHT, -(-WIDTH * bits // 8))
    assert not rows[:, 0].any()  # palette rows are not filtered
    np.testing.assert_array_equal(rows[:, 1:], _packed(labels, bits))
    with Image.open(tmp_path / "q.png") as im:
        assert im.mode == "P" and im.size == (WIDTH, HEIGHT)
        np.testing.assert_array_equal(np.asarray(im), labels)
        np.testing.assert_array_equal(np.array(im.getpalette()[: 3 * k]).reshape(k, 3), colours)
    np.testing.assert_array_equal(imagecodecs.png_decode(data), colours[labels])
    subsample = Image.fromarray(colours[labels[::16, ::16]])  # the preview, from the same pass
    subsample.thumbnail((256, 256), Image.Resampling.LANCZOS)
    with Image.open(tmp_path / "p.png") as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(subsample))


def test_nodata_is_a_transparent_entry_streamed(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (5, 3)).astype(np.uint8)
    computed: list = []
    chunks = ((64,) * 4 + (44,), (64,) * 3 + (8,))
    lazy = _lazy(1, np.uint8, 5, chunks=chunks, computed=computed)
    lazy = da.where((da.arange(300)[:, None] < 40) | (da.arange(200)[None, :] >= 197), 7, lazy).astype(np.uint8)
    streamed = _Streamed(monkeypatch, computed)
    write_image(lazy, tmp_path / "n.png", palette=colours, nodata=7, tile=32)
    streamed.check(chunks)
    labels = lazy.compute()
    assert (labels == 7).any() and (labels < 5).any()
    data = (tmp_path / "n.png").read_bytes()
    chunks = _chunks(data)
    assert _ihdr(chunks)["bit_depth"] == 4  # 8 entries: 5 colours, two unused, no-data
    assert _body(chunks, b"tRNS") == bytes([255] * 7 + [0])
    expected = np.zeros((8, 4), np.uint8)
    expected[:5, :3], expected[:5, 3] = colours, 255
    expected[5:7, 3] = 255
    with Image.open(tmp_path / "n.png") as im:
        np.testing.assert_array_equal(np.asarray(im), labels)
        np.testing.assert_array_equal(np.asarray(im.convert("RGBA")), expected[labels])
    np.testing.assert_array_equal(imagecodecs.png_decode(data), expected[labels])


@pytest.mark.parametrize("nodata", [None, 9])
def test_rgba_palette_alpha_goes_to_trns(tmp_path, nodata):
    rng = np.random.default_rng(2)
    colours = rng.integers(0, 256, (6, 4)).astype(np.uint8)
    colours[:, 3] = [255, 0, 128, 64, 255, 255]
    labels = rng.integers(0, 6, (150, 170)).astype(np.uint8)
    if nodata is not None:
        labels[::5] = nodata
    write_image(labels, tmp_path / "a.png", palette=colours, nodata=nodata, tile=32)
    data = (tmp_path / "a.png").read_bytes()
    chunks = _chunks(data)
    # trailing opaque entries are left out of tRNS; the no-data entry is transparent
    assert _body(chunks, b"tRNS") == (bytes([255, 0, 128, 64]) if nodata is None
                                      else bytes([255, 0, 128, 64, 255, 255, 255, 255, 255, 0]))
    assert _ihdr(chunks)["bit_depth"] == (4 if nodata is not None else 4)
    table = np.zeros((10, 4), np.uint8)
    table[:6] = colours
    table[6:9, 3] = 255
    with Image.open(tmp_path / "a.png") as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGBA")), table[labels])
    np.testing.assert_array_equal(imagecodecs.png_decode(data), table[labels])


# --------------------------------------------------------------------------- colour images


def _rgb_cases():
    grey = np.array([[0], [60], [120], [180], [240]], np.uint8)
    rgba = np.array([[255, 0, 0, 255], [0, 255, 0, 128], [0, 0, 255, 0], [9, 9, 9, 200]], np.uint8)
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250], [10, 11, 9]], np.uint8)
    grey16 = np.array([[0], [1000], [40000], [65535]], np.uint16)
    return [
        # (name, lazy data, write_image arguments, colour type, bit depth, filter, expected pixels)
        ("rgb", lambda c: _lazy(3, np.uint8, 5, computed=c), dict(palette=rgb, mode="rgb"), 2, 8, 0,
         lambda lab: rgb[lab]),
        ("rgba+nodata", lambda c: _lazy(4, np.uint8, 5, computed=c), dict(palette=rgba, mode="rgb", nodata=4), 6, 8, 0,
         lambda lab: np.concatenate([rgba, np.zeros((1, 4), np.uint8)])[lab]),
        ("grey+nodata", lambda c: _lazy(5, np.uint8, 6, computed=c), dict(palette=grey, mode="rgb", nodata=5), 4, 8, 0,
         lambda lab: np.stack([np.append(grey[:, 0], 0)[lab], np.where(lab == 5, 0, 255)], axis=2)),
        ("grey16+nodata", lambda c: _lazy(11, np.uint8, 5, computed=c), dict(palette=grey16, mode="rgb", nodata=4),
         4, 16, 0, lambda lab: np.stack([np.append(grey16[:, 0], 0)[lab], np.where(lab == 4, 0, 65535)], axis=2)),
        ("image rgb", lambda c: _lazy(6, np.uint8, 256, (3,), computed=c), {}, 2, 8, 2, lambda img: img),
        ("image grey16", lambda c: _lazy(7, np.uint16, 65536, computed=c), {}, 0, 16, 2, lambda img: img),
    ]


@pytest.mark.parametrize("case", _rgb_cases(), ids=lambda c: c[0])
def test_colour_images_round_trip_streamed(tmp_path, monkeypatch, case):
    _, make, kwargs, ctype, depth, filt, expect = case
    computed: list = []
    lazy = make(computed)
    streamed = _Streamed(monkeypatch, computed)
    write_image(lazy, tmp_path / "c.png", tile=64, **kwargs)
    streamed.check()
    source = lazy.compute()
    expected = expect(source)
    data = (tmp_path / "c.png").read_bytes()
    chunks = _chunks(data)
    head = _ihdr(chunks)
    assert (head["colour_type"], head["bit_depth"]) == (ctype, depth)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    row_bytes = WIDTH * channels * depth // 8
    rows = _idat_rows(chunks, HEIGHT, row_bytes)
    assert set(np.unique(rows[:, 0])) == {filt}  # palette colours unfiltered, images "Up"
    decoded = imagecodecs.png_decode(data)
    np.testing.assert_array_equal(decoded, expected)
    with Image.open(tmp_path / "c.png") as im:
        back = np.asarray(im)
    if ctype == 4 and depth == 16:  # Pillow reads 16-bit grey + alpha as 8-bit RGBA
        np.testing.assert_array_equal(back, (expected[..., [0, 0, 0, 1]] >> 8).astype(np.uint8))
    else:
        np.testing.assert_array_equal(back.astype(expected.dtype), expected)


def test_an_image_above_pillows_limit_is_written_and_read_back(tmp_path, monkeypatch):
    height, width = 9000, 10000  # 90 MP: above Pillow's 89.5 MP warning limit
    assert height * width > Image.MAX_IMAGE_PIXELS

    def pattern(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        y, x = np.ogrid[y0:y1, x0:x1]
        return ((y // 37 + x // 53) % 2).astype(np.uint8)

    labels = da.map_blocks(pattern, dtype=np.uint8, chunks=((1024,) * 8 + (808,), (2048,) * 4 + (1808,)),
                           meta=np.empty((0, 0), np.uint8))
    colours = np.array([[20, 40, 60], [200, 180, 160]], np.uint8)
    out = write_image(labels, tmp_path / "big.png", palette=colours, tile=256)
    data = out.read_bytes()
    assert _ihdr(_chunks(data))["bit_depth"] == 1
    decoded = imagecodecs.png_decode(data)  # libpng expands the palette: 270 MB of RGB
    assert decoded.shape == (height, width, 3)
    assert set(np.unique(decoded[::97, ::89].reshape(-1, 3) @ [1, 256, 65536])) == {
        20 + 40 * 256 + 60 * 65536, 200 + 180 * 256 + 160 * 65536}
    for y0 in range(0, height, 1500):  # the red sample tells the two colours apart
        window = {None: {"array-location": [(y0, min(y0 + 1500, height)), (0, width)]}}
        np.testing.assert_array_equal(decoded[y0 : y0 + 1500, :, 0] == 200, pattern(window) == 1)
    del decoded
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only this test reads a big file with Pillow
    with Image.open(out) as im:
        assert im.size == (width, height) and im.mode == "P"
        im.draft(None, None)
        im.load()
        np.testing.assert_array_equal(np.asarray(im)[-300:], pattern(
            {None: {"array-location": [(height - 300, height), (0, width)]}}))


# --------------------------------------------------------------------------- streaming


def test_peak_memory_does_not_grow_with_the_image(tmp_path):
    """tracemalloc's peak while writing a lazy 1-bit palette PNG, 1024 and 8192 rows tall."""
    colours = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    peaks = {}
    for height in (1024, 8192):
        lazy = _lazy(10, np.uint8, 2, chunks=((64,) * (height // 64), (1001,)))
        peaks[height] = _write_measured(lazy, tmp_path / f"h{height}.png", palette=colours, tile=64)
    # Pillow's whole-image write held all 8 MB of labels; here a fixed cost (zlib's
    # state), a few bands of 64 kB, and the task graph: a few kB a chunk (0.10 byte a pixel
    # of growth alone; tracemalloc also counts other threads' allocations of a full test run,
    # which once took it to 0.128). Holding the labels would grow by 1 byte a pixel.
    assert peaks[8192] < 8192 * 1001 / 4, peaks
    assert peaks[8192] - peaks[1024] < (8192 - 1024) * 1001 / 4, peaks


@pytest.mark.distributed
def test_rows_are_packed_on_worker_processes(local_cluster, tmp_path):
    from distributed import get_task_stream

    chunks = ((64,) * 4, (128, 72))
    labels = _lazy(12, np.uint8, 4, chunks=chunks)  # computed on the workers
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    with dask.config.set(scheduler=local_cluster), get_task_stream(local_cluster) as ts:
        out = write_image(labels, tmp_path / "w.png", palette=colours, tile=64)
    keys = [str(t["key"]) for t in ts.data]
    assert sum("bq-write" in k for k in keys) == labels.npartitions  # one packing task a chunk
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im), labels.compute(scheduler="threads"))


def test_refused_before_a_pixel_is_computed(tmp_path):
    computed = []

    def spy(block):
        if block.size:
            computed.append(block.shape)
        return block

    for data, kwargs, error, match in [
        (np.zeros((64, 64, 3), np.uint16), {}, InputTypeError, "uint16 grey"),
        (np.zeros((64, 64), np.float32), {}, InputTypeError, "float32"),
        (np.zeros((64, 64), np.uint8), dict(palette=np.zeros((300, 3))), InvalidParameterError, "256 colours"),
        (np.zeros((64, 64), np.uint8), dict(palette=np.zeros((4, 3)), compression_level=12),
         InvalidParameterError, "compression_level=12"),
    ]:
        lazy = da.from_array(data, chunks=32).map_blocks(spy, dtype=data.dtype)
        with pytest.raises(error, match=match):
            write_image(lazy, tmp_path / "x.png", tile=32, **kwargs)
    assert computed == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- structure


def test_structure_filters_levels_and_extra_chunks(tmp_path):
    """pngcheck-style: CRCs, order, IHDR, IDAT pieces, and each filter undone by the spec's rules."""
    from bigquant.io.png_write import IDAT_BYTES, PngLayout, PngRowEncoder, write_png

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (700, 600, 3), dtype=np.uint8)  # incompressible: 1.26 MB of IDAT: 5 chunks
    phys = struct.pack(">IIB", 3780, 3780, 1)
    for filt in ("none", "sub", "up", "average", "paeth", "adaptive"):
        small = filt not in ("none", "up")
        img = image[:23, :31] if small else image
        layout = PngLayout(2, 8, filter=filt)
        encoder = PngRowEncoder("image", np.dtype(np.uint8), None, 0, 16, Codec("none", 1), png=layout)
        out = tmp_path / f"{filt}.png"
        write_png(da.from_array(img, chunks=(16, 32, 3)), out, encoder, extra_chunks=[(b"pHYs", phys)],
                  compression_level=9)
        data = out.read_bytes()
        chunks = _chunks(data)
        assert [k for k, _ in chunks[:2]] == [b"IHDR", b"pHYs"] and chunks[1][1] == phys
        assert _ihdr(chunks) == dict(width=img.shape[1], height=img.shape[0], bit_depth=8, colour_type=2,
                                     compression=0, filter=0, interlace=0)
        idat = [b for k, b in chunks if k == b"IDAT"]
        assert all(len(b) == IDAT_BYTES for b in idat[:-1]) and 0 < len(idat[-1]) <= IDAT_BYTES
        if not small:
            assert len(idat) == 5
        rows = _idat_rows(chunks, img.shape[0], img.shape[1] * 3)
        kinds = set(np.unique(rows[:, 0]).tolist())
        assert kinds <= ({0, 1, 2, 3, 4} if filt == "adaptive" else
                         {{"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}[filt]})
        np.testing.assert_array_equal(_unfilter(rows, 3).reshape(img.shape), img)
        np.testing.assert_array_equal(imagecodecs.png_decode(data), img)
        with Image.open(out) as im:
            np.testing.assert_array_equal(np.asarray(im), img)
            assert im.info["dpi"] == pytest.approx((96, 96), abs=0.1)


def test_compression_level_is_the_zlib_level(tmp_path):
    labels = _lazy(9, np.uint8, 16, chunks=((64,) * 16, (512, 489)))
    colours = np.random.default_rng(9).integers(0, 256, (16, 3)).astype(np.uint8)
    sizes = {}
    for level in (0, 1, 9):
        out = write_image(labels, tmp_path / f"l{level}.png", palette=colours, tile=64, compression_level=level)
        sizes[level] = out.stat().st_size
        with Image.open(out) as im:
            np.testing.assert_array_equal(np.asarray(im), labels.compute())
    raw = 1024 * (1 + -(-WIDTH // 2))
    assert sizes[0] > raw > sizes[1] > sizes[9]  # stored blocks, then ever smaller
