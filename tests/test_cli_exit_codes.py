"""The exit codes of ``bigquant``: README's table, checked against real failures of every class.

The table (``| exit code | meaning |`` in README.md) is parsed; each class of
outcome is produced for real through :func:`bigquant.cli.main` -- a run that
succeeds, a missing input, an existing output, a bad argument, a quality floor
that cannot be reached, an interrupt (SIGINT delivered to this process while
the output is being written) -- and the code returned must be the one the
table gives for that class.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from bigquant.cli import main

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def exit_code_table(text: str) -> dict[int, str]:
    """The rows of the first ``| exit code | meaning |`` table of ``text``: code -> meaning."""
    start = text.index("| exit code | meaning |")
    rows: dict[int, str] = {}
    for line in text[start:].splitlines()[2:]:  # after the header and its |---| line
        m = re.fullmatch(r"\|\s*(\d+)\s*\|(.*)\|\s*", line)
        if m is None:
            break
        code = int(m.group(1))
        assert code not in rows, f"exit code {code} twice in the table"
        rows[code] = m.group(2).strip()
    return rows


def test_the_table_parser_reads_every_row_and_stops_after_the_table():
    text = "x\n| exit code | meaning |\n|---|---|\n| 0 | fine |\n| 130 | stopped (Ctrl-C) |\n\n| 5 | other |\n"
    assert exit_code_table(text) == {0: "fine", 130: "stopped (Ctrl-C)"}


@pytest.fixture(scope="module")
def table() -> dict[int, str]:
    rows = exit_code_table(README.read_text())
    assert rows, "README has no exit-code table"
    return rows


def _code_for(table: dict[int, str], *words: str) -> int:
    """The one code whose meaning names every word of ``words`` (the table's own description of the class)."""
    codes = [code for code, meaning in table.items() if all(w.lower() in meaning.lower() for w in words)]
    assert len(codes) == 1, f"the README table has {len(codes)} rows naming {words}: {table}"
    return codes[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> pathlib.Path:
    from PIL import Image

    from bigquant.io.sample import make_sample_image

    path = tmp_path_factory.mktemp("in") / "photo.png"
    Image.fromarray(make_sample_image((80, 96), seed=2)).save(path)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> pathlib.Path:
    """A 12.6 MP tiled TIFF: its write lasts long enough to be interrupted in the middle."""
    from bigquant.io.sample import make_sample_tiff

    return make_sample_tiff(tmp_path_factory.mktemp("big") / "big.tif", size=(3072, 4096), tile=256, seed=1)


def _quantize(*args: str) -> list[str]:
    return ["quantize", *args, "--no-cluster", "--no-progress"]


def test_success(table, photo, tmp_path):
    out = tmp_path / "o.tif"
    assert main(_quantize(str(photo), str(out), "-k", "4")) == _code_for(table, "success")
    assert out.exists()


def test_a_missing_input(table, tmp_path, capsys):
    code = main(_quantize(str(tmp_path / "nope.tif"), str(tmp_path / "o.tif")))
    assert code == _code_for(table, "missing", "input")
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "o.tif").exists()


def test_an_existing_output(table, photo, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    assert main(_quantize(str(photo), str(out), "-k", "4")) == _code_for(table, "output that exists")
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("bad", [["-k", "0"], ["--strategy", "magic"]], ids=["k=0", "strategy"])
def test_a_bad_argument(table, photo, tmp_path, bad):
    assert main(_quantize(str(photo), str(tmp_path / "o.tif"), *bad)) == _code_for(table, "usage error", "-k 0")
    assert not (tmp_path / "o.tif").exists()


def test_a_quality_floor_that_cannot_be_reached(table, photo, tmp_path):
    out = tmp_path / "o.tif"
    code = main(_quantize(str(photo), str(out), "-k", "2", "--psnr", "60:70"))  # 2 colours: far below 60 dB
    assert code == _code_for(table, "--quality", "nothing written")
    assert not out.exists()


def test_an_input_skipped_with_keep_going(table, photo, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code = main(_quantize("-k", "4", "--keep-going", "--ext", "-q.png", str(photo), str(bad)))
    assert code == _code_for(table, "--keep-going", "skipped")
    captured = capsys.readouterr()
    assert [line for line in (captured.out + captured.err).splitlines() if str(bad) in line] == [
        line for line in captured.err.splitlines() if line.startswith(f"skipped {bad}:")]  # once


def test_an_output_that_would_not_be_smaller(table, tmp_path):
    from PIL import Image

    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(flat, optimize=True)  # under 100 bytes
    code = main(_quantize(str(flat), str(tmp_path / "o.tif"), "-k", "2", "--skip-if-larger"))  # a BigTIFF header alone is bigger
    assert code == _code_for(table, "--skip-if-larger", "not be smaller")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.png"]


@contextlib.contextmanager
def _sigint_raises_while(running: threading.Event) -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt (as Python's own handler does) only while ``running`` is set.

    A signal that arrives after ``main`` returned is then ignored instead of
    stopping the test session.
    """
    def handler(signum, frame):
        if running.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_interrupt_in_the_middle_of_the_write(table, big, tmp_path, capsys):
    """A real SIGINT, sent to this process once the temporary output exists: 130, nothing changed."""
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    running, sent = threading.Event(), threading.Event()

    def interrupt_when_writing() -> None:
        deadline = time.monotonic() + 300
        while running.is_set() and time.monotonic() < deadline:
            if any(tmp_path.glob(".o.*.tmp*")):  # the write has started (bigquant.io.atomic)
                sent.set()
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=interrupt_when_writing, daemon=True)
    with _sigint_raises_while(running):
        running.set()
        watcher.start()
        try:
            code = main(_quantize(str(big), str(out), "-k", "8", "--overwrite"))
        finally:
            running.clear()
    watcher.join(timeout=10)
    assert sent.is_set(), "the write never started"
    assert code == _code_for(table, "interrupted"), capsys.readouterr().err
    assert "interrupted" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]  # no temporary left


def test_every_code_of_the_table_is_a_class_tested_here(table):
    classes = [("success",), ("missing", "input"), ("output that exists",), ("usage error", "-k 0"),
               ("--quality", "nothing written"), ("interrupted",), ("--keep-going", "skipped"),
               ("--skip-if-larger", "not be smaller")]
    assert {_code_for(table, *words) for words in classes} == set(table)


def test_python_m_bigquant_flushes_its_output_and_returns_the_code(tmp_path):
    """``python -m bigquant`` leaves with os._exit after main: what it printed into a pipe still arrives."""
    import subprocess
    import sys

    import numpy as np
    import tifffile

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((64, 64, 3), np.uint8), tile=(32, 32))
    env = dict(os.environ, PYTHONPATH=str(README.parent))
    done = subprocess.run([sys.executable, "-m", "bigquant", "info", str(src)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0 and "64 x 64 x 3" in done.stdout
    done = subprocess.run([sys.executable, "-m", "bigquant", "quantize", str(tmp_path / "missing.tif"),
                           str(tmp_path / "out.tif")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and "no such file" in done.stderr
