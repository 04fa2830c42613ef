"""Outputs in object storage: an S3 server on loopback (moto), workers reading and writing through it.

The server is moto's ``ThreadedMotoServer`` on 127.0.0.1 (a free port),
started and stopped by the module.  Credentials and the endpoint reach s3fs
(and every worker process, started after them) through the usual
environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``.  Every result is compared byte for byte with the same
job on local files.
"""

from __future__ import annotations

import json
import logging
import pathlib
import uuid

import dask.array as da
import numpy as np
import pytest

import bigquant
from bigquant.errors import ImageWriteError, InvalidParameterError

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

#: what a failed or finished run must never leave beside its outputs
HIDDEN = "/."


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on loopback; yields the s3fs filesystem. The environment is restored after."""
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on the terminal
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "bigquant-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "bigquant-test-secret")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.delenv(name, raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield s3fs.S3FileSystem()
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


@pytest.fixture(scope="module")
def cluster(s3):
    """2 single-thread worker processes, started once the S3 environment is set (they inherit it)."""
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as lc, distributed.Client(lc, set_as_default=False) as client:
        yield client


@pytest.fixture
def bucket(s3):
    """A fresh bucket for one test."""
    name = f"bq-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(base, 24, axis=0), 20, axis=1)[:190, :150]
    return np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def inputs(tmp_path, s3, bucket, image):
    """The image as a tiled TIFF, once on local disk and once in the bucket: (local path, URL)."""
    import tifffile

    local = tmp_path / "in.tif"
    tifffile.imwrite(local, image, tile=(64, 64), compression="zlib", photometric="rgb")
    s3.put_file(str(local), f"{bucket}/in/in.tif")
    return local, f"s3://{bucket}/in/in.tif"


def keys(s3, bucket: str) -> list[str]:
    s3.invalidate_cache()
    return sorted(k[len(bucket) + 1:] for k in s3.find(bucket))


def same_palette_doc(local: dict, remote: dict) -> None:
    """The palette JSONs agree on everything but where things are and how long they took."""
    for key in set(local) | set(remote):
        if key not in ("output", "source", "seconds"):
            assert local.get(key) == remote.get(key), key


def assert_same_zarr(local: pathlib.Path, url: str) -> None:
    import zarr

    a, b = zarr.open_array(str(local), mode="r"), zarr.open_array(url, mode="r")
    assert a.shape == b.shape and a.chunks == b.chunks
    np.testing.assert_array_equal(a[:], b[:])
    assert dict(a.attrs) == dict(b.attrs)


# --------------------------------------------------------------------------- s3 -> s3, on a cluster


@pytest.mark.distributed
@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".png"])
def test_quantize_s3_to_s3_matches_local(cluster, s3, bucket, inputs, tmp_path, suffix, caplog):
    local_in, url_in = inputs
    out = f"s3://{bucket}/out/q{suffix}"
    with caplog.at_level(logging.WARNING, logger="bigquant"):
        bigquant.quantize(url_in, out, 6, tile=64, palette_out=f"s3://{bucket}/out/q.json", client=cluster)
    bigquant.quantize(local_in, tmp_path / f"q{suffix}", 6, tile=64, palette_out=tmp_path / "q.json",
                      client=cluster)
    if suffix == ".zarr":
        assert_same_zarr(tmp_path / "q.zarr", out)
        # the workers wrote the chunks themselves: no fallback through the client
        assert "stored by the client" not in caplog.text
    else:
        assert s3.cat_file(out[5:]) == (tmp_path / f"q{suffix}").read_bytes()
    same_palette_doc(json.loads((tmp_path / "q.json").read_text()), json.loads(s3.cat_file(f"{bucket}/out/q.json")))
    assert not [k for k in keys(s3, bucket) if HIDDEN in "/" + k], "temporary keys left behind"


@pytest.mark.distributed
def test_cog_with_preview_and_compare_s3(cluster, s3, bucket, inputs, tmp_path):
    local_in, url_in = inputs
    opts = dict(tile=64, cog=True)
    bigquant.quantize(url_in, f"s3://{bucket}/o/c.tif", 5, preview=f"s3://{bucket}/o/p.png",
                      compare=f"s3://{bucket}/o/cmp.png", client=cluster, **opts)
    bigquant.quantize(local_in, tmp_path / "c.tif", 5, preview=tmp_path / "p.png", compare=tmp_path / "cmp.png",
                      client=cluster, **opts)
    for name in ("c.tif", "p.png", "cmp.png"):
        assert s3.cat_file(f"{bucket}/o/{name}") == (tmp_path / name).read_bytes(), name
    # and the palette TIFF's attribute table beside it, at its URL, as beside a local file
    assert s3.cat_file(f"{bucket}/o/c.tif.aux.xml") == (tmp_path / "c.tif.aux.xml").read_bytes()
    assert keys(s3, bucket) == ["in/in.tif", "o/c.tif", "o/c.tif.aux.xml", "o/cmp.png", "o/p.png"]


@pytest.mark.distributed
def test_dithered_quantize_s3_matches_local(cluster, s3, bucket, inputs, tmp_path):
    local_in, url_in = inputs
    bigquant.quantize(url_in, f"s3://{bucket}/d.tif", 4, tile=64, dither="floyd-steinberg", client=cluster)
    bigquant.quantize(local_in, tmp_path / "d.tif", 4, tile=64, dither="floyd-steinberg", client=cluster)
    assert s3.cat_file(f"{bucket}/d.tif") == (tmp_path / "d.tif").read_bytes()
    # the label spool is never made beside a URL output, locally or in the bucket
    assert keys(s3, bucket) == ["d.tif", "d.tif.aux.xml", "in/in.tif"]
    assert not list(pathlib.Path.cwd().glob("s3:*"))


@pytest.mark.distributed
def test_dither_spool_in_a_scratch_prefix(cluster, s3, bucket, inputs, tmp_path, caplog):
    """``scratch=s3://…``: the workers spool the labels there (no second dither), and nothing stays."""
    local_in, url_in = inputs
    with caplog.at_level(logging.INFO, logger="bigquant.pipeline.dither"):
        bigquant.quantize(url_in, f"s3://{bucket}/d.tif", 4, tile=64, chunks=64, dither="floyd-steinberg",
                          scratch=f"s3://{bucket}/scratch", client=cluster)
    assert f"labels from the spool s3://{bucket}/scratch/" in caplog.text
    bigquant.quantize(local_in, tmp_path / "d.tif", 4, tile=64, chunks=64, dither="floyd-steinberg")
    assert s3.cat_file(f"{bucket}/d.tif") == (tmp_path / "d.tif").read_bytes()
    assert keys(s3, bucket) == ["d.tif", "d.tif.aux.xml", "in/in.tif"]
    # memory:// is each process's own: the workers cannot share it, so they dither again (same bytes)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bigquant.pipeline.dither"):
        bigquant.quantize(url_in, f"s3://{bucket}/m.tif", 4, tile=64, chunks=64, dither="floyd-steinberg",
                          scratch="memory://bq-scratch", client=cluster)
    assert "no spool, dithering again" in caplog.text
    assert s3.cat_file(f"{bucket}/m.tif") == (tmp_path / "d.tif").read_bytes()


@pytest.mark.distributed
def test_cli_quantize_s3_to_s3_with_scratch(cluster, s3, bucket, inputs, tmp_path, capsys):
    """``bigquant quantize s3://… s3://… --scratch s3://…`` on a cluster: the same bytes as the library, locally."""
    from bigquant.cli import main

    local_in, url_in = inputs
    out = f"s3://{bucket}/cli/q.tif"
    code = main(["quantize", url_in, out, "-k", "4", "--tile", "64", "--dither", "floyd-steinberg",
                 "--scratch", f"s3://{bucket}/scratch", "--palette-out", f"s3://{bucket}/cli/q.json",
                 "--scheduler", cluster.scheduler.address])
    assert code == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    bigquant.quantize(local_in, tmp_path / "q.tif", 4, tile=64, dither="floyd-steinberg")
    assert s3.cat_file(out[5:]) == (tmp_path / "q.tif").read_bytes()
    assert keys(s3, bucket) == ["cli/q.json", "cli/q.tif", "cli/q.tif.aux.xml", "in/in.tif"]
    # run again without --overwrite: refused before any pixel is read, exit code 1, the object kept
    assert main(["quantize", url_in, out, "-k", "4", "--scheduler", cluster.scheduler.address]) == 1
    assert "output exists" in capsys.readouterr().err
    assert s3.cat_file(out[5:]) == (tmp_path / "q.tif").read_bytes()


@pytest.mark.distributed
def test_quantize_many_to_s3_prefix(cluster, s3, bucket, image, tmp_path):
    import tifffile

    urls, locals_ = [], []
    for i, img in enumerate((image, image[::-1, ::-1].copy())):
        path = tmp_path / f"img{i}.tif"
        tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb")
        s3.put_file(str(path), f"{bucket}/in/img{i}.tif")
        urls.append(f"s3://{bucket}/in/img{i}.tif")
        locals_.append(path)
    remote = bigquant.quantize_many(urls, f"s3://{bucket}/set", 5, tile=64, palette_out=f"s3://{bucket}/set/p.json",
                                    client=cluster)
    local = bigquant.quantize_many(locals_, tmp_path / "set", 5, tile=64, palette_out=tmp_path / "p.json",
                                   client=cluster)
    np.testing.assert_array_equal(remote.palette, local.palette)
    assert [f.dst for f in remote.files] == [f"s3://{bucket}/set/img0.tif", f"s3://{bucket}/set/img1.tif"]
    for i in range(2):
        assert s3.cat_file(f"{bucket}/set/img{i}.tif") == (tmp_path / "set" / f"img{i}.tif").read_bytes()
    doc_remote = json.loads(s3.cat_file(f"{bucket}/set/p.json"))
    doc_local = json.loads((tmp_path / "p.json").read_text())
    assert doc_remote["palette"] == doc_local["palette"]
    assert [e["error"] for e in doc_remote["inputs"]] == [e["error"] for e in doc_local["inputs"]]


@pytest.mark.distributed
def test_resumed_sweep_with_csv_in_s3(cluster, s3, bucket, image, tmp_path):
    from bigquant.cli import main

    csv_url = f"s3://{bucket}/runs/sweep.csv"
    first = bigquant.sweep(image, [2, 3], out=csv_url, client=cluster)
    assert first.ks == [2, 3]
    text = s3.cat_file(csv_url[5:]).decode()
    assert text.splitlines()[0].startswith("k,cost") and len(text.splitlines()) == 3
    resumed = bigquant.sweep(image, [2, 3, 4], out=csv_url, resume_from=csv_url, client=cluster)
    assert resumed.resumed == [2, 3]
    local = bigquant.sweep(image, [2, 3, 4], out=tmp_path / "sweep.csv", client=cluster)
    assert [(r.k, r.cost, r.palette) for r in resumed.rows] == [(r.k, r.cost, r.palette) for r in local.rows]
    rows = bigquant.pipeline.sweep.read_rows(csv_url)
    assert [r.k for r in rows] == [2, 3, 4]
    assert [r.palette for r in rows] == [r.palette for r in local.rows]
    # the command line: --out and --resume at the same URL go on where it stopped
    src = tmp_path / "img.tif"
    import tifffile

    tifffile.imwrite(src, image, photometric="rgb")
    cli_url = f"s3://{bucket}/runs/cli.csv"
    assert main(["sweep", str(src), "--k", "2,3", "--out", cli_url]) == 0
    assert main(["sweep", str(src), "--k", "2,3,4", "--out", cli_url, "--resume"]) == 0
    assert [r.k for r in bigquant.pipeline.sweep.read_rows(cli_url)] == [2, 3, 4]


# --------------------------------------------------------------------------- failures and refusals


PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def _fails_on_block(block: np.ndarray, block_info=None) -> np.ndarray:
    if block_info is not None and block_info[0]["chunk-location"][:2] == (1, 0):
        raise RuntimeError("encoder failed on purpose")
    return block


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".png"])
def test_failed_write_leaves_no_object(s3, bucket, suffix):
    labels = da.from_array(np.arange(128 * 96, dtype=np.uint16).reshape(128, 96) % 4, chunks=64).astype(np.uint8)
    failing = labels.map_blocks(_fails_on_block, dtype=np.uint8)
    out = f"s3://{bucket}/out/f{suffix}"
    with pytest.raises(RuntimeError, match="on purpose"):
        bigquant.write_image(failing, out, palette=PALETTE, tile=64)
    assert keys(s3, bucket) == [], "a failed write left an object or a temporary key"
    # the same write without the failure is complete
    bigquant.write_image(labels, out, palette=PALETTE, tile=64)
    assert keys(s3, bucket) and not [k for k in keys(s3, bucket) if HIDDEN in "/" + k]


def test_upload_in_parts_completed_only_on_success(s3, bucket, tmp_path, monkeypatch):
    """A TIFF of several parts: one multipart upload, aborted when a part fails, completed when all are in."""
    from bigquant.io import objects

    monkeypatch.setattr(objects, "PART_SIZE", 5 * 2**20)  # S3's smallest part
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (2048, 3072), dtype=np.uint8)  # 6 MiB uncompressed: two parts
    out = f"s3://{bucket}/big.tif"
    real_copy = objects.shutil.copyfileobj

    def copy_then_fail(src, dst, length=0):
        dst.write(src.read(objects.PART_SIZE + 1))  # the first part goes up
        raise ConnectionError("network lost on purpose")

    monkeypatch.setattr(objects.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(ImageWriteError, match="on purpose"):
        bigquant.write_image(labels, out, palette=PALETTE, tile=512, compression=None)
    assert keys(s3, bucket) == []
    assert s3.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []  # aborted
    monkeypatch.setattr(objects.shutil, "copyfileobj", real_copy)
    bigquant.write_image(labels, out, palette=PALETTE, tile=512, compression=None)
    bigquant.write_image(labels, tmp_path / "big.tif", palette=PALETTE, tile=512, compression=None)
    assert s3.cat_file(out[5:]) == (tmp_path / "big.tif").read_bytes()
    assert keys(s3, bucket) == ["big.tif"]


def _never_read(block: np.ndarray) -> np.ndarray:
    raise AssertionError("a pixel was read")


def test_existing_object_refused_before_any_pixel(s3, bucket):
    s3.pipe_file(f"{bucket}/q.tif", b"not ours")
    unread = da.zeros((64, 64, 3), dtype=np.uint8, chunks=32).map_blocks(_never_read, dtype=np.uint8)
    with pytest.raises(ImageWriteError, match="output exists"):
        bigquant.quantize(unread, f"s3://{bucket}/q.tif", 4)
    assert s3.cat_file(f"{bucket}/q.tif") == b"not ours"
    # a prefix of someone else's objects at a .zarr output is never replaced, even with overwrite
    s3.pipe_file(f"{bucket}/theirs.zarr/data.bin", b"x")
    with pytest.raises(ImageWriteError, match="did not write"):
        bigquant.quantize(unread, f"s3://{bucket}/theirs.zarr", 4, overwrite=True)
    # a bucket that does not exist: refused up front as well
    with pytest.raises(ImageWriteError, match="bucket"):
        bigquant.quantize(unread, f"s3://{bucket}-missing/q.tif", 4)
    assert keys(s3, bucket) == ["q.tif", "theirs.zarr/data.bin"]


def test_output_that_is_the_input_url_refused(s3, bucket, inputs):
    s3.copy(inputs[1][5:], f"{bucket}/in.tif")
    before = s3.cat_file(f"{bucket}/in.tif")
    with pytest.raises(InvalidParameterError, match="is the input"):
        bigquant.quantize(f"s3://{bucket}/in.tif", f"s3://{bucket}/in.tif", 4, overwrite=True)
    assert s3.cat_file(f"{bucket}/in.tif") == before


def test_palette_written_and_applied_from_s3(s3, bucket, image):
    """``palette_out=s3://…`` then ``palette=s3://…``: the same labels, byte for byte."""
    bigquant.quantize(image, f"s3://{bucket}/fit.tif", 5, tile=64, palette_out=f"s3://{bucket}/p.json")
    bigquant.quantize(image, f"s3://{bucket}/applied.tif", palette=f"s3://{bucket}/p.json", tile=64)
    assert s3.cat_file(f"{bucket}/applied.tif") == s3.cat_file(f"{bucket}/fit.tif")
    with pytest.raises(bigquant.errors.ImageReadError, match="no such file"):
        bigquant.quantize(image, f"s3://{bucket}/x.tif", palette=f"s3://{bucket}/missing.json", tile=64)


def test_stale_temporary_prefix_of_a_killed_run_removed(s3, bucket, image):
    """A zarr temporary prefix a killed run left is removed once stale; a fresh one (a run writing) is kept."""
    from bigquant.io.objects import URLPath, remove_stale_url_temporaries, temp_key

    target = URLPath(f"s3://{bucket}/out/q.zarr")
    left = temp_key(target)
    s3.pipe_file(f"{str(left)[5:]}/zarr.json", b"{}")
    s3.pipe_file(f"{str(left)[5:]}/c/0/0", b"x")
    s3.pipe_file(f"{bucket}/out/.other.0123456789.tmp.zarr/zarr.json", b"{}")  # not this target's
    assert remove_stale_url_temporaries(target) == []  # fresh: maybe a run still writing
    assert remove_stale_url_temporaries(target, older_than=-1) == [str(left)[5:]]
    assert keys(s3, bucket) == ["out/.other.0123456789.tmp.zarr/zarr.json"]


def test_overwrite_replaces_an_own_zarr_store(s3, bucket, image, tmp_path):
    out = f"s3://{bucket}/z.zarr"
    bigquant.quantize(image, out, 3, tile=64)
    bigquant.quantize(image, out, 5, tile=64, overwrite=True)
    bigquant.quantize(image, tmp_path / "z.zarr", 5, tile=64)
    assert_same_zarr(tmp_path / "z.zarr", out)
    assert not [k for k in keys(s3, bucket) if HIDDEN in "/" + k]


# --------------------------------------------------------------------------- memory://


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".png"])
def test_memory_url_outputs_match_local(image, tmp_path, suffix):
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"bq-{uuid.uuid4().hex[:8]}"
    try:
        bigquant.quantize(image, f"memory://{root}/q{suffix}", 4, tile=64, palette_out=f"memory://{root}/q.gpl")
        bigquant.quantize(image, tmp_path / f"q{suffix}", 4, tile=64, palette_out=tmp_path / "q.gpl")
        if suffix == ".zarr":
            assert_same_zarr(tmp_path / "q.zarr", f"memory://{root}/q.zarr")
        else:
            assert fs.cat_file(f"/{root}/q{suffix}") == (tmp_path / f"q{suffix}").read_bytes()
        assert fs.cat_file(f"/{root}/q.gpl") == (tmp_path / "q.gpl").read_bytes()
        assert not [k for k in fs.find(f"/{root}") if HIDDEN in k]
    finally:
        fs.rm(f"/{root}", recursive=True)


@pytest.mark.distributed
def test_memory_zarr_on_worker_processes_stored_through_the_client(cluster, image, tmp_path, caplog):
    """memory:// is each process's own: the workers' writes would be lost, so the client stores the chunks."""
    import fsspec

    root = f"bq-{uuid.uuid4().hex[:8]}"
    try:
        with caplog.at_level(logging.WARNING, logger="bigquant"):
            bigquant.quantize(image, f"memory://{root}/q.zarr", 4, tile=64, chunks=64, client=cluster)
        assert "stored by the client" in caplog.text
        bigquant.quantize(image, tmp_path / "q.zarr", 4, tile=64, chunks=64)
        assert_same_zarr(tmp_path / "q.zarr", f"memory://{root}/q.zarr")
    finally:
        fsspec.filesystem("memory").rm(f"/{root}", recursive=True)
