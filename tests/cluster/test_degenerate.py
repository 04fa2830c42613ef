"""Data of fewer distinct values than ``n_clusters`` end at once, on every strategy, as scikit-learn ends them.

scikit-learn's ``KMeans`` returns ``n_clusters`` centres (the distinct points
and duplicates of them), inertia 0, and one ``ConvergenceWarning``: "Number of
distinct clusters (n) found smaller than n_clusters (k). Possibly due to
duplicate points in X."  bigquant's estimators do the same for every strategy,
dtype, band count and array kind, in one pass over the pixels, and agree with
each other.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans

from bigquant import KMeans, MiniBatchKMeans
from bigquant.cluster import points as points_module
from bigquant.errors import ConvergenceWarning, FewColoursWarning

K = 8
N_VALUES = 3
SHAPE = (48, 40)

#: (dtype, bands) -> the KMeans strategies that take such data
CASES = {
    ("uint8", 1): ["histogram", "grid", "pixels", "minibatch"],
    ("uint8", 3): ["histogram", "grid", "pixels", "minibatch"],
    ("uint8", 4): ["grid", "pixels", "minibatch"],
    ("uint16", 1): ["histogram", "grid", "pixels", "minibatch"],
    ("uint16", 3): ["grid", "pixels", "minibatch"],
    ("uint16", 4): ["grid", "pixels", "minibatch"],
    ("float32", 1): ["grid", "pixels", "minibatch"],
    ("float32", 3): ["grid", "pixels", "minibatch"],
    ("float32", 4): ["grid", "pixels", "minibatch"],
}
KMEANS_CASES = [(d, b, s) for (d, b), strategies in CASES.items() for s in strategies]
MINIBATCH_CASES = [(d, b, s) for (d, b), strategies in CASES.items()
                   for s in (["pixels", "histogram"] if "histogram" in strategies else ["pixels"])]


def few_values(dtype: str, bands: int, n_values: int = N_VALUES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of ``SHAPE`` made of ``n_values`` distinct values (each on about 1/n_values of it), and the values."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        values = rng.uniform(-3.0, 7.0, (n_values, bands)).astype(np.float32)  # no integers: exactness shows
    else:
        top = np.iinfo(dtype).max
        values = rng.integers(0, top + 1, (n_values, bands)).astype(dtype)
    assert np.unique(values, axis=0).shape[0] == n_values
    image = values[rng.integers(0, n_values, SHAPE)]
    return image, values


def as_input(image: np.ndarray, kind: str) -> np.ndarray | da.Array:
    return da.from_array(image, chunks=(16, 20, -1)) if kind == "dask" else image


def rows(a: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(r) for r in np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1])}


def matched_rows(centers: np.ndarray, values: np.ndarray) -> set[tuple[float, ...]]:
    """The values each centre rounds to (scikit-learn's means are exact only to rounding); asserts each is one."""
    values = np.asarray(values, dtype=np.float64)
    out = set()
    for c in np.asarray(centers, dtype=np.float64):
        near = np.flatnonzero(np.all(np.isclose(values, c, rtol=1e-9, atol=1e-9), axis=1))
        assert near.shape[0] == 1, (c, values)
        out.add(tuple(values[near[0]]))
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings split the samples into the same groups (whatever the label numbers)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.fixture
def passes(monkeypatch):
    """Counts of the passes over a point set: assignments (Lloyd) and searches for the farthest points."""
    counts = {"partial_sums": 0, "farthest": 0}
    for cls in (points_module.DaskPoints, points_module.InMemoryPoints):
        for name in counts:
            original = getattr(cls, name)

            def counted(self, *args, _original=original, _name=name, **kwargs):
                counts[_name] += 1
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, counted)
    return counts


def fit_recorded(model, X):
    """``model.fit(X)`` and every warning it emitted (none filtered out)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(X)
    return model, record


def sklearn_fit(image: np.ndarray):
    X = image.reshape(-1, image.shape[-1]).astype(np.float64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = SKKMeans(K, n_init=1, random_state=0).fit(X)
    return model, record


def check_like_sklearn(model, record, image: np.ndarray, values: np.ndarray) -> None:
    """k centres holding every value (and copies), inertia 0, labels exact, one warning in scikit-learn's words."""
    sk, sk_record = sklearn_fit(image)
    (sk_warning,) = sk_record
    assert [w.category for w in record] == [FewColoursWarning], [str(w.message) for w in record]
    assert issubclass(record[0].category, ConvergenceWarning)
    assert str(record[0].message) == str(sk_warning.message) == (
        f"Number of distinct clusters ({N_VALUES}) found smaller than n_clusters ({K}). "
        "Possibly due to duplicate points in X.")
    assert record[0].filename == __file__  # it points at the caller's fit
    centers = model.cluster_centers_
    assert centers.shape == sk.cluster_centers_.shape == (K, image.shape[-1])
    assert rows(centers) == rows(values)  # exactly the values
    assert matched_rows(sk.cluster_centers_, values) == rows(values)
    assert model.inertia_ == 0.0
    assert sk.inertia_ <= 1e-12 * float(np.square(image, dtype=np.float64).sum())  # 0 up to its rounding
    labels = np.asarray(model.labels_.compute() if isinstance(model.labels_, da.Array) else model.labels_)
    assert labels.shape == image.shape[:-1]
    np.testing.assert_array_equal(centers[labels], image.astype(np.float64))
    assert same_partition(labels, sk.labels_)
    predicted = model.predict(image)
    np.testing.assert_array_equal(predicted, labels)  # ties to the lowest index: never a copy


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize(("dtype", "bands", "strategy"), KMEANS_CASES)
def test_kmeans_ends_in_one_pass_like_sklearn(dtype, bands, strategy, kind, passes):
    image, values = few_values(dtype, bands)
    model, record = fit_recorded(KMeans(K, strategy=strategy, random_state=0), as_input(image, kind))
    assert model.strategy_ == strategy
    check_like_sklearn(model, record, image, values)
    if strategy == "minibatch":
        # no mini-batch step: the first round of samples, then one exact pass for the inertia
        assert passes == {"partial_sums": 1, "farthest": 0}
    else:
        # one Lloyd iteration (the histogram's: every colour on itself), no search for empty clusters;
        # the grid pass counts the few integer values exactly: no pass over the pixels either
        assert model.n_iter_ == 1
        counted = strategy == "histogram" or (strategy == "grid" and np.dtype(dtype).kind in "ui"
                                              and np.dtype(dtype).itemsize * bands <= 8)
        assert passes == {"partial_sums": 0 if counted else 1, "farthest": 0}


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize(("dtype", "bands", "strategy"), MINIBATCH_CASES)
def test_minibatch_ends_at_once_like_sklearn(dtype, bands, strategy, kind, passes):
    image, values = few_values(dtype, bands)
    model, record = fit_recorded(MiniBatchKMeans(K, strategy=strategy, random_state=0), as_input(image, kind))
    check_like_sklearn(model, record, image, values)
    assert model.n_steps_ == 0 and model.n_iter_ == 1
    # the histogram strategy counted the colours; the pixels one checks its sample in one pass
    assert passes == {"partial_sums": 0 if strategy == "histogram" else 1, "farthest": 0}


@pytest.mark.parametrize(("dtype", "bands"), list(CASES))
def test_kmeans_and_minibatch_agree(dtype, bands):
    image, values = few_values(dtype, bands, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewColoursWarning)
        fits = [KMeans(K, strategy=s, random_state=2).fit(image) for s in CASES[(dtype, bands)]]
        fits.append(MiniBatchKMeans(K, random_state=2).fit(image))
    for model in fits:
        assert model.cluster_centers_.shape == (K, bands)
        assert rows(model.cluster_centers_) == rows(values)
        assert model.inertia_ == 0.0


@pytest.mark.parametrize("strategy", ["grid", "pixels"])
def test_explicit_start_far_from_the_data_ends_with_copies(strategy, passes):
    """A given start whose extra centres lie far from every point: they end as copies of points, as in scikit-learn."""
    image, values = few_values("uint16", 3)
    init = np.concatenate([values.astype(np.float64), np.full((K - N_VALUES, 3), 7.5)])
    model, record = fit_recorded(KMeans(K, init=init, strategy=strategy), image)
    check_like_sklearn(model, record, image, values)
    # the grid strategy's one pass counted the few values: its Lloyd iteration runs on them
    assert model.n_iter_ == 1 and passes == {"partial_sums": 0 if strategy == "grid" else 1, "farthest": 0}


@pytest.mark.parametrize("strategy", ["grid", "pixels", "minibatch"])
def test_the_warning_counts_the_values_and_k_values_need_none(strategy):
    """k - 1 values: the warning says k - 1; as many values as clusters: every one a centre, and no warning."""
    image, values = few_values("uint16", 3, n_values=K - 1)
    model, record = fit_recorded(KMeans(K, strategy=strategy, random_state=0), image)
    assert [(w.category, str(w.message)) for w in record] == [(FewColoursWarning, (
        f"Number of distinct clusters ({K - 1}) found smaller than n_clusters ({K}). "
        "Possibly due to duplicate points in X."))]
    assert model.cluster_centers_.shape == (K, 3) and rows(model.cluster_centers_) == rows(values)
    image, values = few_values("uint16", 3, n_values=K)
    model, record = fit_recorded(KMeans(K, strategy=strategy, random_state=0), image)
    assert record == []
    assert rows(model.cluster_centers_) == rows(values) and model.inertia_ == 0.0


def test_a_value_the_sample_missed_takes_one_more_pass(monkeypatch, passes):
    """A value too rare for the k-means++ sample still becomes a centre: one relocation, one more pass."""
    from bigquant.cluster import kmeans as kmeans_module

    monkeypatch.setattr(kmeans_module, "init_sample_size", lambda k: 64)  # 64 of 1,920 pixels
    image, values = few_values("uint16", 3)
    image = image.copy()
    image[0, 0] = (1, 2, 3)  # one pixel of a fourth value
    model, record = fit_recorded(KMeans(K, strategy="pixels", random_state=0), image)
    assert [w.category for w in record] == [FewColoursWarning]
    assert str(record[0].message).startswith("Number of distinct clusters (4) found smaller than n_clusters (8).")
    assert rows(model.cluster_centers_) == rows(values) | {(1.0, 2.0, 3.0)}
    assert model.inertia_ == 0.0
    assert model.n_iter_ == 2 and passes == {"partial_sums": 2, "farthest": 1}


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_quantize_writes_the_few_colours_with_a_palette_of_k(tmp_path, dtype):
    """Downstream: the written palette has k entries (copies included) and every pixel its colour's first entry."""
    import tifffile

    from bigquant import quantize

    image, values = few_values(dtype, 3)
    out = tmp_path / "q.tif"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = quantize(image, out, K, random_state=0, tile=16)
    assert [(w.category, str(w.message)) for w in record] == [(FewColoursWarning, (
        f"Number of distinct clusters ({N_VALUES}) found smaller than n_clusters ({K}). "
        "Possibly due to duplicate points in X."))]
    palette, error = model.palette()
    assert palette.shape == (K, 3) and rows(palette) == rows(values)
    assert error == (0 if dtype == "uint8" else None)  # known on a histogram fit only
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        index = page.asarray()
        colormap = page.colormap[:, :K].T
    if dtype == "uint8":
        np.testing.assert_array_equal(colormap, palette.astype(np.uint16) * 257)
    else:  # 16-bit colours are shown through the display stretch: 8-bit colours x 257, copies alike
        assert (colormap % 257 == 0).all()
        same = (palette[:, None, :] == palette[None, :, :]).all(axis=2)
        np.testing.assert_array_equal((colormap[:, None, :] == colormap[None, :, :]).all(axis=2), same)
    np.testing.assert_array_equal(palette[index], image)
    # ties to the lowest index: each colour is written as its first entry of the palette
    first = {tuple(c): i for i, c in reversed(list(enumerate(palette.tolist())))}
    assert {tuple(c): int(i) for c, i in zip(image.reshape(-1, 3).tolist(), index.ravel())} == first


@pytest.mark.parametrize("kind", ["in-memory", "dask", "bounded"])
def test_lloyd_on_fewer_points_than_centres_ends_after_one_iteration(kind):
    """Lloyd's iteration from centres on every point (and copies): converged at once, the copies left empty.

    ``bounded`` runs in one compiled call (:func:`bigquant.kernels.lloyd_bounded`),
    the others in the Python loop; an empty cluster never takes a point
    already on its centre, so nothing moves.
    """
    from bigquant.cluster.lloyd import lloyd
    from bigquant.cluster.points import BoundedPoints, DaskPoints, InMemoryPoints

    image, values = few_values("uint16", 3)
    X = image.reshape(-1, 3)
    counts = np.array([np.all(X == v, axis=1).sum() for v in values], dtype=np.float64)
    # copies of the last value: an empty cluster taking the first point (another value) would move
    start = np.concatenate([values.astype(np.float64), np.repeat(values[-1:].astype(np.float64), K - N_VALUES, 0)])
    if kind == "in-memory":
        pts = InMemoryPoints(X)
    elif kind == "dask":
        pts = DaskPoints(da.from_array(X, chunks=(500, 3)))
    else:  # the distinct points weighted by their counts, as a histogram's
        pts = BoundedPoints(values, counts)
        assert pts.single_call
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = lloyd(pts, start, max_iter=300, tol=0.0)
    assert record == []
    assert result.converged and result.n_iter == 1 and result.inertia == 0.0
    np.testing.assert_array_equal(result.centers, start)


def test_weighted_samples_end_on_the_values_exactly(passes):
    """Weights make the clusters' means round; a run that puts every sample on a centre keeps the centres."""
    image, values = few_values("float32", 3)
    weight = np.random.default_rng(5).uniform(0.1, 3.0, SHAPE)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = KMeans(K, strategy="pixels", random_state=0).fit(image, sample_weight=weight)
    assert [w.category for w in record] == [FewColoursWarning]
    assert rows(model.cluster_centers_) == rows(values) and model.inertia_ == 0.0
    # one pass: no other to measure the inertia of means that only rounded
    assert model.n_iter_ == 1 and passes == {"partial_sums": 1, "farthest": 0}


def test_minibatch_first_round_that_missed_a_value(monkeypatch):
    """A first round without the rare value: the mini-batch run goes on, and still warns once, as KMeans does."""
    from bigquant.cluster import minibatch

    image, values = few_values("uint16", 3)
    image = image.copy()
    rare = np.array([1, 2, 3], dtype=np.uint16)
    image[0, 0] = rare
    original = minibatch._PixelSampler.draw
    rounds = []

    def draw(self, n, rng):
        batch = original(self, n, rng)
        if not rounds:  # the first round, as if it had not drawn the rare pixel
            batch.X[np.all(batch.X == rare, axis=1)] = values[0]
        rounds.append(n)
        return batch

    monkeypatch.setattr(minibatch._PixelSampler, "draw", draw)
    model, record = fit_recorded(MiniBatchKMeans(K, random_state=0), image)
    n_distinct = np.unique(model.cluster_centers_, axis=0).shape[0]
    assert model.n_steps_ > 0 and model.cluster_centers_.shape == (K, 3)
    assert rows(model.cluster_centers_) == rows(values) | {(1.0, 2.0, 3.0)} and model.inertia_ == 0.0
    assert [(w.category, str(w.message)) for w in record] == [(FewColoursWarning, (
        f"Number of distinct clusters ({n_distinct}) found smaller than n_clusters ({K}). "
        "Possibly due to duplicate points in X."))]
