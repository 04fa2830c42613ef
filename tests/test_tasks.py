"""Task names: short, distinct, from one module, and the only ones bigquant's graphs use."""

from __future__ import annotations

import pytest
from dask.callbacks import Callback
from distributed.utils import key_split

from bigquant import tasks


def test_names_are_short_distinct_and_prefixed():
    assert len(tasks.NAMES) == len({n[: tasks.MAX_LENGTH] for n in tasks.NAMES})
    for name in tasks.NAMES | {tasks.HISTOGRAM}:
        assert name.startswith(tasks.PREFIX) and len(name) <= tasks.MAX_LENGTH, name
        assert key_split(f"{name}-0123456789abcdef0123456789abcdef") == name
    assert tasks.tree_sum(tasks.LLOYD) in tasks.NAMES


class _Keys(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def _pretask(self, key, dsk, state):  # noqa: D401 - dask callback
        self.keys.add(key_split(key))


def _known(label: str) -> bool:
    """A name of the module, or several fused by dask's optimisation (``bq-read-bq-labels``)."""
    if label in tasks.NAMES:
        return True
    return any(label.startswith(name + "-") and _known(label[len(name) + 1:]) for name in tasks.NAMES)


@pytest.mark.parametrize("strategy", ["histogram", "pixels", "grid"])
def test_every_bigquant_task_is_named_in_the_module(tmp_path, strategy):
    from bigquant import quantize
    from bigquant.io.sample import make_sample_image

    img = make_sample_image((96, 128), seed=1)
    if strategy == "grid":  # the strategy of 16-bit data
        img = img.astype("uint16") * 257
    with _Keys() as seen:
        quantize(img, tmp_path / "q.tif", 5, strategy=strategy, random_state=0, tile=32, chunks=48)
    ours = {k for k in seen.keys if k.startswith(tasks.PREFIX)}
    assert not {k for k in seen.keys if k.startswith("bigquant")}
    assert all(_known(k) for k in ours), ours
    ours = {k for k in ours if k in tasks.NAMES}
    assert tasks.WRITE in ours
    expected = {"histogram": {tasks.COUNT}, "pixels": {tasks.LLOYD, tasks.MOMENTS},
                "grid": {tasks.GRID, tasks.tree_sum(tasks.GRID), tasks.GRID_RANGE, tasks.LLOYD}}
    assert expected[strategy] <= ours
