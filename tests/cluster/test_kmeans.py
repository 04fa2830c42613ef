"""KMeans: parity with scikit-learn, histogram vs pixels, determinism, bad input."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans

from bigquant import KMeans, MiniBatchKMeans, kernels
from bigquant.errors import (
    ConvergenceWarning,
    FewColoursWarning,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
)


def sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Continuous 3-channel data (no exact distance ties) and initial centres."""
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 255, (6, 3))
    X = np.concatenate([c + rng.normal(0, 25, (700, 3)) for c in true])
    C0 = X[rng.choice(len(X), 6, replace=False)]
    return X, C0


@pytest.fixture
def photo_like() -> np.ndarray:
    """A small uint8 RGB image with smooth gradients and noise (many colours)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([xx * 2, yy * 2 + xx // 3, 255 - xx - yy], axis=-1).astype(float)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------- toy cases


def test_hand_computed_toy_case():
    X = np.array([[0.0], [1.0], [10.0], [11.0], [12.0]])
    km = KMeans(2, init=np.array([[0.0], [5.0]])).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, [[0.5], [11.0]])
    np.testing.assert_array_equal(km.labels_, [0, 0, 1, 1, 1])
    assert km.inertia_ == pytest.approx(0.25 * 2 + 1 + 0 + 1)
    assert km.n_iter_ == 2  # second iteration confirms the fixed point


def test_weighted_toy_case():
    X = np.array([[0.0, 0.0], [4.0, 0.0], [100.0, 100.0]])
    km = KMeans(2, init=np.array([[1.0, 0.0], [90.0, 90.0]])).fit(X, sample_weight=[3, 1, 2])
    np.testing.assert_allclose(km.cluster_centers_[0], [1.0, 0.0])
    assert km.inertia_ == pytest.approx(3 * 1 + 1 * 9)


def test_k_equals_one_is_the_mean(blobs):
    X, _ = blobs
    km = KMeans(1).fit(X)
    np.testing.assert_allclose(km.cluster_centers_[0], X.mean(axis=0))
    assert km.inertia_ == pytest.approx(((X - X.mean(axis=0)) ** 2).sum())


# ----------------------------------------------------------------- scikit-learn parity


@pytest.mark.parametrize("as_dask", [False, True])
def test_pixels_matches_sklearn_lloyd(blobs, as_dask):
    X, C0 = blobs
    sk = SKKMeans(6, init=C0, n_init=1, algorithm="lloyd", tol=1e-4).fit(X)
    data = da.from_array(X, chunks=(500, 3)) if as_dask else X
    km = KMeans(6, init=C0, strategy="pixels", tol=1e-4).fit(data)
    labels = np.asarray(km.labels_)
    np.testing.assert_array_equal(labels, sk.labels_)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    assert abs(km.n_iter_ - sk.n_iter_) <= 1
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-9)


def test_pixels_matches_sklearn_with_sample_weight(blobs):
    X, C0 = blobs
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    sk = SKKMeans(6, init=C0, n_init=1, algorithm="lloyd").fit(X, sample_weight=w)
    km = KMeans(6, init=C0, strategy="pixels").fit(X, sample_weight=w)
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-9)


def test_uint8_image_matches_sklearn_up_to_ties(photo_like):
    X = photo_like.reshape(-1, 3)
    rng = np.random.default_rng(3)
    C0 = X[rng.choice(len(X), 8, replace=False)].astype(float)
    sk = SKKMeans(8, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = KMeans(8, init=C0).fit(photo_like)
    assert km.strategy_ == "histogram"
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6, atol=1e-6)
    differ = np.flatnonzero(km.labels_.ravel() != sk.labels_)
    # any label that differs must be an exact tie between the two centres
    d = ((X[differ, None, :].astype(float) - km.cluster_centers_[None]) ** 2).sum(-1)
    ours = d[np.arange(len(differ)), km.labels_.ravel()[differ]]
    theirs = d[np.arange(len(differ)), sk.labels_[differ]]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_empty_cluster_is_relocated_like_sklearn():
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(50, 1, (200, 2))])
    C0 = np.array([[0.0, 0.0], [50.0, 50.0], [1000.0, 1000.0]])  # third centre is empty
    sk = SKKMeans(3, init=C0, n_init=1, algorithm="lloyd").fit(X)
    km = KMeans(3, init=C0, strategy="pixels").fit(X)
    assert np.bincount(km.labels_, minlength=3).min() > 0
    np.testing.assert_allclose(sorted_rows(km.cluster_centers_), sorted_rows(sk.cluster_centers_), rtol=1e-6)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-9)
    # histogram path relocates the same way
    Xi = np.round(X * 2 + 20).astype(np.uint8)
    C0i = np.array([[20.0, 20.0], [120.0, 120.0], [255.0, 0.0]])
    a = KMeans(3, init=C0i, strategy="pixels").fit(Xi)
    b = KMeans(3, init=C0i, strategy="histogram").fit(Xi)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert not (a.cluster_centers_ == 0).all(axis=1).any()


# ----------------------------------------------------------------- histogram vs pixels


@pytest.mark.parametrize("k", [1, 5, 16])
def test_histogram_equals_pixels(photo_like, k):
    X = photo_like.reshape(-1, 3)
    C0 = X[np.random.default_rng(k).choice(len(X), k, replace=False)].astype(float)
    a = KMeans(k, init=C0, strategy="pixels").fit(photo_like)
    b = KMeans(k, init=C0, strategy="histogram").fit(photo_like)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.n_iter_ == b.n_iter_
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)


def test_histogram_equals_pixels_on_dask(photo_like):
    img = da.from_array(photo_like, chunks=(40, 50, 3))
    C0 = photo_like.reshape(-1, 3)[:6].astype(float) + np.arange(6)[:, None] * 30
    a = KMeans(6, init=C0, strategy="pixels").fit(img)
    b = KMeans(6, init=C0, strategy="histogram").fit(img)
    assert isinstance(a.labels_, da.Array) and isinstance(b.labels_, da.Array)
    assert b.labels_.shape == photo_like.shape[:2]
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_.compute(), b.labels_.compute())


def test_gray_and_four_channels():
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (50, 40, 1), dtype=np.uint8)
    km = KMeans(4, random_state=0).fit(gray)
    assert km.strategy_ == "histogram" and km.cluster_centers_.shape == (4, 1)
    kp = KMeans(4, init=km.cluster_centers_, strategy="pixels").fit(gray)
    np.testing.assert_allclose(kp.cluster_centers_, km.cluster_centers_)
    rgba = rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)
    k4 = KMeans(5, random_state=0).fit(rgba)
    assert k4.strategy_ == "grid" and k4.cluster_centers_.shape == (5, 4)
    assert k4.labels_.shape == (30, 30)
    uint16_gray = (rng.integers(0, 65536, (20, 20, 1))).astype(np.uint16)
    assert KMeans(3, random_state=0).fit(uint16_gray).strategy_ == "histogram"


@pytest.mark.parametrize("strategy", ["histogram", "grid", "pixels"])
def test_fewer_colours_than_clusters(strategy):
    """As scikit-learn: k centres (every colour, then copies), inertia 0, one warning and no other, one pass."""
    img = np.zeros((10, 10, 3), np.uint8)
    img[:5] = [255, 0, 0]
    img[5:, :5] = [0, 0, 255]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        km = KMeans(8, strategy=strategy, random_state=0).fit(img)
    assert [(w.category, str(w.message)) for w in record] == [(FewColoursWarning, (
        "Number of distinct clusters (3) found smaller than n_clusters (8). Possibly due to duplicate points in X."))]
    assert issubclass(FewColoursWarning, ConvergenceWarning)
    assert km.cluster_centers_.shape == (8, 3)
    assert np.unique(km.cluster_centers_, axis=0).tolist() == [[0, 0, 0], [0, 0, 255], [255, 0, 0]]
    assert km.inertia_ == 0 and km.n_iter_ == 1
    np.testing.assert_array_equal(km.cluster_centers_[km.labels_], img)


# ----------------------------------------------------------------- determinism


@pytest.mark.parametrize("strategy", ["histogram", "pixels"])
def test_same_palette_for_any_chunking(photo_like, strategy):
    results = []
    for chunks in [(96, 128, 3), (32, 48, 3), (17, 128, 3)]:
        img = da.from_array(photo_like, chunks=chunks)
        results.append(KMeans(7, random_state=42, strategy=strategy).fit(img).cluster_centers_)
    results.append(KMeans(7, random_state=42, strategy=strategy).fit(photo_like).cluster_centers_)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_kmeans_parallel_init_is_chunking_independent(photo_like):
    a = KMeans(6, init="k-means||", random_state=1, strategy="pixels").fit(da.from_array(photo_like, chunks=(50, 50, 3)))
    b = KMeans(6, init="k-means||", random_state=1, strategy="pixels").fit(da.from_array(photo_like, chunks=(96, 40, 3)))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    ref = KMeans(6, random_state=1, n_init=3).fit(photo_like)
    assert a.inertia_ <= 1.05 * ref.inertia_


def test_n_init_keeps_the_best_run(photo_like):
    # the first of n_init runs is the n_init=1 run of the same seed: best-of-4 can only be lower
    first = KMeans(9, random_state=0, strategy="pixels").fit(photo_like).inertia_
    best = KMeans(9, random_state=0, n_init=4, strategy="pixels").fit(photo_like).inertia_
    assert best < first  # with this seed a later run ends lower, and it is the one kept


def test_random_init_and_reproducibility(photo_like):
    a = KMeans(5, init="random", random_state=3).fit(photo_like)
    b = KMeans(5, init="random", random_state=3).fit(photo_like)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.distributed
def test_threads_and_processes_give_the_same_palette(photo_like, local_cluster):
    from distributed import get_task_stream

    img = da.from_array(photo_like, chunks=(32, 64, 3))
    with dask.config.set(scheduler="threads"):
        threaded = [KMeans(6, random_state=7, strategy=s).fit(img) for s in ("histogram", "pixels")]
        threaded_labels = threaded[0].labels_.compute()
    with local_cluster.as_current(), get_task_stream(local_cluster) as stream:
        distributed = [KMeans(6, random_state=7, strategy=s).fit(img) for s in ("histogram", "pixels")]
        labels = distributed[0].labels_.compute()
    for t, d in zip(threaded, distributed):
        np.testing.assert_array_equal(t.cluster_centers_, d.cluster_centers_)
        assert t.n_iter_ == d.n_iter_
    np.testing.assert_array_equal(labels, threaded_labels)
    from distributed.utils import key_split

    prefixes = {key_split(t["key"]) for t in stream.data}
    assert {"bq-count", "bq-lloyd", "bq-labels"} <= prefixes
    workers = {t["worker"] for t in stream.data}
    assert len(workers) == 2


# ----------------------------------------------------------------- estimator API


def test_not_fitted_is_also_scikit_learns_when_it_is_loaded(blobs):
    """Without scikit-learn loaded the error is bigquant's only; with it, also scikit-learn's class."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, bigquant\n"
            "try:\n"
            "    bigquant.KMeans(2).predict(np.zeros((3, 3)))\n"
            "except bigquant.errors.NotFittedError as e:\n"
            "    print('sklearn' in sys.modules, type(e) is bigquant.errors.NotFittedError)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]  # nothing imported scikit-learn
    exceptions = pytest.importorskip("sklearn.exceptions")
    X, _ = blobs
    for estimator in (KMeans(3), MiniBatchKMeans(3)):
        with pytest.raises(exceptions.NotFittedError, match="not fitted yet") as info:
            estimator.predict(X)
        assert isinstance(info.value, NotFittedError)
        assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


def test_estimator_contract(blobs):
    X, C0 = blobs
    km = KMeans(6, random_state=0)
    assert km.get_params()["n_clusters"] == 6
    assert km.set_params(n_clusters=4) is km and km.n_clusters == 4
    with pytest.raises(NotFittedError, match="not fitted"):
        km.predict(X)
    assert km.fit(X) is km
    assert km.cluster_centers_.dtype == np.float64 and km.cluster_centers_.shape == (4, 3)
    assert km.n_features_in_ == 3
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    dist = km.transform(X)
    assert dist.shape == (len(X), 4)
    np.testing.assert_array_equal(dist.argmin(axis=1), km.labels_)
    assert km.score(X) == pytest.approx(-km.inertia_)
    np.testing.assert_array_equal(KMeans(4, random_state=0).fit_predict(X), km.labels_)
    assert "n_clusters=4" in repr(km)


def test_lazy_labels_and_predict_on_dask(photo_like):
    img = da.from_array(photo_like, chunks=(48, 64, 3))
    km = KMeans(5, random_state=0).fit(img)
    assert isinstance(km.labels_, da.Array)
    assert km.labels_.chunks == img.chunks[:2]
    assert km.labels_.name.startswith("bq-labels")
    np.testing.assert_array_equal(km.predict(img).compute(), km.predict(photo_like))
    dist = km.transform(img)
    assert dist.shape == (96, 128, 5)
    assert km.score(img) == pytest.approx(-km.inertia_, rel=1e-9)


def test_max_iter_warns():
    X = np.random.default_rng(0).normal(size=(500, 3))
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        km = KMeans(5, max_iter=1, random_state=0, strategy="pixels").fit(X)
    assert km.n_iter_ == 1


def test_only_centres_come_back_per_iteration(photo_like):
    """Each Lloyd iteration is one compute returning k x C sums, not the data."""
    img = da.from_array(photo_like, chunks=(32, 32, 3))
    computed = []

    class Count(dask.callbacks.Callback):
        def _finish(self, dsk, state, errored):
            computed.append(state["cache"])

    calls = []
    km = KMeans(4, random_state=0, strategy="pixels", persist=False,
                callback=lambda i, inertia, shift: calls.append(i))
    with Count():
        km.fit(img)
    assert calls == list(range(1, km.n_iter_ + 1))
    # moments + init sample + one per iteration + final inertia (unless exact fixed point)
    assert km.n_iter_ + 1 <= len(computed) <= km.n_iter_ + 4


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_clusters": 0}, "n_clusters=0 must be >= 1"),
        ({"n_clusters": 2.5}, "n_clusters=2.5 must be an integer"),
        ({"n_clusters": "8"}, "n_clusters='8' must be an integer"),
        ({"strategy": "magic"}, "strategy='magic' is not one of"),
        ({"init": "kmeans"}, "init='kmeans' is not one of"),
        ({"init": np.zeros((3, 2))}, r"init array has shape \(3, 2\); expected"),
        ({"max_iter": 0}, "max_iter=0 must be >= 1"),
        ({"tol": -1.0}, "tol=-1.0 must be >= 0"),
        ({"n_init": 0}, "n_init=0 must be >= 1"),
        ({"random_state": "x"}, "random_state='x'"),
    ],
)
def test_bad_parameters(params, match):
    X = np.random.default_rng(0).integers(0, 255, (50, 3)).astype(np.uint8)
    kw = {"n_clusters": 3, **params}
    with pytest.raises(InvalidParameterError, match=match):
        KMeans(**kw).fit(X)


@pytest.mark.parametrize(
    "X, exc, match",
    [
        (np.zeros(10), InvalidInputError, "must be 2-D .* got 1-D"),
        (np.zeros((2, 2, 2, 2)), InvalidInputError, "got 4-D"),
        (np.zeros((0, 3)), InvalidInputError, "empty"),
        (np.array([[1.0, np.nan, 2.0]]), InvalidInputError, "NaN or infinity"),
        (np.array([[1.0, np.inf, 2.0]]), InvalidInputError, "NaN or infinity"),
        (np.zeros((4, 3), dtype=bool), InputTypeError, "dtype=bool"),
        (np.zeros((4, 3), dtype=complex), InputTypeError, "dtype=complex128"),
        (np.array([["a", "b"]], dtype=object), InputTypeError, "dtype=object"),
        ("not an array", InputTypeError, "numpy or dask array"),
    ],
)
def test_bad_data(X, exc, match):
    with pytest.raises(exc, match=match):
        KMeans(2).fit(X)


def test_nan_in_dask_data_is_reported_without_dask_traceback():
    X = np.ones((100, 3))
    X[57, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or infinity"):
        KMeans(2, strategy="pixels").fit(da.from_array(X, chunks=(30, 3)))


@pytest.mark.parametrize(
    "w, match",
    [
        (np.ones(7), r"sample_weight has shape \(7,\)"),
        (-np.ones(40), "non-negative"),
        (np.zeros(40), "sums to zero"),
    ],
)
def test_bad_sample_weight(w, match):
    X = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(InvalidInputError, match=match):
        KMeans(2).fit(X, sample_weight=w)


def test_histogram_strategy_on_float_data_is_refused():
    with pytest.raises(InvalidParameterError, match="strategy='histogram' needs unsigned"):
        KMeans(2, strategy="histogram").fit(np.random.default_rng(0).normal(size=(10, 3)))


def test_predict_with_wrong_channels(blobs):
    X, _ = blobs
    km = KMeans(2, random_state=0).fit(X)
    with pytest.raises(InvalidInputError, match="X has 2 features, but KMeans is expecting 3 features as input"):
        km.predict(X[:, :2])


def test_no_warnings_on_normal_fit(photo_like):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KMeans(4, random_state=0).fit(photo_like)


# ----------------------------------------------------------------- checkpoints


class _Killed(Exception):
    pass


def _kill_at(iteration):
    def callback(i, inertia, shift):
        if i == iteration:
            raise _Killed

    return callback


@pytest.fixture
def many_colours() -> np.ndarray:
    """An image with more distinct colours than the coarse-to-fine threshold."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:200, 0:200]
    img = np.stack([xx, yy, (xx + yy) // 2], axis=-1) + rng.normal(0, 12, (200, 200, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "strategy, n_init, image",
    [("pixels", 1, "photo_like"), ("pixels", 3, "photo_like"), ("histogram", 1, "many_colours")],
)
def test_fit_resumes_from_checkpoint(request, tmp_path, strategy, n_init, image):
    photo_like = request.getfixturevalue(image)
    if image == "many_colours":
        from bigquant import colour_histogram
        from bigquant.cluster.search import COARSE_MIN_COLOURS

        assert colour_histogram(photo_like).n_colours > COARSE_MIN_COLOURS  # coarse-to-fine path
    ckpt = tmp_path / "fit.json"
    reference = KMeans(12, random_state=4, strategy=strategy, n_init=n_init, tol=0).fit(photo_like)
    assert reference.n_iter_ > 6
    killed = KMeans(12, random_state=4, strategy=strategy, n_init=n_init, tol=0,
                    checkpoint=ckpt, checkpoint_every=2, callback=_kill_at(reference.n_iter_ - 2))
    with pytest.raises(_Killed):
        killed.fit(photo_like)
    assert ckpt.exists()
    resumed = KMeans(12, random_state=4, strategy=strategy, n_init=n_init, tol=0,
                     checkpoint=ckpt, checkpoint_every=2)
    iterations = []
    resumed.set_params(callback=lambda i, inertia, shift: iterations.append(i))
    resumed.fit(photo_like)
    np.testing.assert_array_equal(resumed.cluster_centers_, reference.cluster_centers_)
    assert resumed.n_iter_ == reference.n_iter_
    assert resumed.inertia_ == pytest.approx(reference.inertia_, rel=1e-12)
    assert iterations and iterations[0] > 1  # it did not start over
    assert not ckpt.exists()  # removed once the fit completed


def test_checkpoint_of_another_fit_is_ignored(photo_like, tmp_path):
    ckpt = tmp_path / "fit.json"
    with pytest.raises(_Killed):
        KMeans(5, random_state=0, strategy="pixels", checkpoint=ckpt, checkpoint_every=1,
               callback=_kill_at(2)).fit(photo_like)
    other = KMeans(6, random_state=0, strategy="pixels", checkpoint=ckpt).fit(photo_like)
    plain = KMeans(6, random_state=0, strategy="pixels").fit(photo_like)
    np.testing.assert_array_equal(other.cluster_centers_, plain.cluster_centers_)


def test_checkpoint_directory_must_exist(photo_like, tmp_path):
    with pytest.raises(InvalidParameterError, match="does not exist"):
        KMeans(3, checkpoint=tmp_path / "missing" / "c.json").fit(photo_like)


# --- boolean sample_weight: a mask ----------------------------------------------


@pytest.mark.parametrize("as_dask", [False, True])
def test_boolean_weight_is_a_mask_counted_exactly(photo_like, as_dask):
    """Masked pixels are not counted: the fit equals the fit of the valid pixels alone,
    with the exact histogram strategy, on numpy and dask input."""
    valid = np.ones(photo_like.shape[:2], bool)
    valid[:, : photo_like.shape[1] // 3] = False
    reference = KMeans(6, random_state=0).fit(photo_like[valid])
    X = da.from_array(photo_like, chunks=(48, 64, 3)) if as_dask else photo_like
    mask = da.from_array(valid, chunks=(32, 32)) if as_dask else valid
    km = KMeans(6, random_state=0).fit(X, sample_weight=mask)
    assert km.strategy_ == "histogram"
    np.testing.assert_array_equal(km.cluster_centers_, reference.cluster_centers_)
    assert km.inertia_ == reference.inertia_
    assert km.histogram_.n_pixels == valid.sum()
    assert np.asarray(km.labels_).shape == photo_like.shape[:2]  # every pixel still labelled


def test_boolean_weight_on_the_pixel_strategy_is_a_weight_of_0_or_1(photo_like):
    valid = np.zeros(photo_like.shape[:2], bool)
    valid[::2] = True
    init = photo_like.reshape(-1, 3)[:5].astype(float) + np.arange(5)[:, None]
    masked = KMeans(5, init=init, strategy="pixels").fit(photo_like, sample_weight=valid)
    weighted = KMeans(5, init=init, strategy="pixels").fit(photo_like, sample_weight=valid.astype(float))
    np.testing.assert_allclose(masked.cluster_centers_, weighted.cluster_centers_)
    assert masked.inertia_ == pytest.approx(weighted.inertia_)


def test_every_sample_masked_is_an_error(photo_like):
    with pytest.raises(InvalidInputError, match="every sample is masked"):
        KMeans(3).fit(photo_like, sample_weight=np.zeros(photo_like.shape[:2], bool))
    lazy = da.zeros(photo_like.shape[:2], dtype=bool, chunks=32)
    with pytest.raises(InvalidInputError, match="every sample is masked"):
        KMeans(3).fit(da.from_array(photo_like, chunks=(32, 32, 3)), sample_weight=lazy)


def test_mask_of_the_wrong_shape_is_an_error(photo_like):
    with pytest.raises(InvalidInputError, match=r"sample_weight \(a mask\) has shape \(3, 3\)"):
        KMeans(3).fit(photo_like, sample_weight=np.ones((3, 3), bool))


def test_labels_of_a_dask_fit_build_their_table_only_when_computed(photo_like):
    """A fit whose lazy labels are never computed (quantize writes its palette's own) builds no table;
    computed, they are every pixel's nearest centre, the same as through the table built on demand."""
    X = da.from_array(photo_like, chunks=(64, 64, 3))
    km = KMeans(5, random_state=0).fit(X)
    assert km._lut is None
    want = kernels.assign_labels(photo_like.reshape(-1, 3), km.cluster_centers_, np.int32)[0]
    np.testing.assert_array_equal(km.labels_.compute().ravel(), want)
    assert km._lut is None  # the task's table is the graph's, not kept
    lut, _, _ = km.lookup_table()  # asked for: built, kept, and the labels' key holds it
    assert km._lut is not None
    np.testing.assert_array_equal(km.predict(X).compute().ravel(), want)


def test_lookup_table_key_without_a_client_holds_the_table_itself(photo_like):
    """On threads nothing travels: the table is not compressed for a trip it never makes."""
    km = KMeans(4, random_state=0).fit(da.from_array(photo_like, chunks=(64, 64, 3)))
    key = km.lookup_table_key()
    assert str(key.key).startswith("bq-lut-")
    assert key.compute() is km.lookup_table()[0]
