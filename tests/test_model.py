"""Tests of bigquant.model: the walkthrough's KMeans, clusters_cost, quantize_image, k sweeps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import pytest

import bigquant
from bigquant import image, model, plotting
from bigquant.errors import (
    ConvergenceWarning,
    FewColoursWarning,
    InvalidInputError,
    NotFittedError,
)

PALETTE = np.array(
    [[10, 20, 30], [200, 40, 40], [40, 200, 60], [230, 230, 240]], dtype=np.uint8
)


@pytest.fixture
def blobs() -> np.ndarray:
    """A 24x30 image of four well-separated colour blobs (noise of +-3 around PALETTE)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(24, 30))
    noise = rng.integers(-3, 4, size=(24, 30, 3))
    return (PALETTE[labels].astype(np.int64) + noise).astype(np.uint8)


@pytest.fixture
def noise_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 25, 3), dtype=np.uint8)


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[np.lexsort(a.T[::-1])]


def _numpy_cost(X: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> int:
    """The walkthrough's cost written out plainly: squared distances to uint8 centroids."""
    vector = X.reshape(-1, 3).astype(np.float64)
    colours = centroids.astype(np.uint8).astype(np.float64)[np.ravel(labels)]
    return int(((vector - colours) ** 2).sum())


# KMeans --------------------------------------------------------------------


def test_kmeans_walkthrough_signature_is_positional():
    km = model.KMeans(5, 1e-3, 50, 7)
    assert (km.n_clusters, km.tol, km.max_iter, km.random_state) == (5, 1e-3, 50, 7)
    assert isinstance(km, bigquant.KMeans)
    params = km.get_params()
    assert params["n_clusters"] == 5 and params["strategy"] == "auto"


def test_kmeans_fit_returns_self_with_walkthrough_attributes(blobs):
    vector = image.Image(blobs).rgb_vector
    km = model.KMeans(4, 1e-4, 100, 0)
    assert km.fit(vector) is km
    assert km.labels_.shape == (24 * 30,)
    assert km.cluster_centers_.shape == (4, 3)
    assert km.iterations == km.n_iter_ >= 1
    assert isinstance(km.iterations, int)
    # the four blobs are found: each centre is within the noise of one palette colour
    np.testing.assert_allclose(_sorted_rows(km.cluster_centers_), _sorted_rows(PALETTE), atol=3)


def test_kmeans_fits_images_and_their_matrices(blobs):
    km_image = model.KMeans(4, random_state=0).fit(image.Image(blobs))
    km_matrix = model.KMeans(4, random_state=0).fit(blobs)
    assert km_image.labels_.shape == (24, 30)
    np.testing.assert_array_equal(km_image.labels_, km_matrix.labels_)
    np.testing.assert_array_equal(km_image.cluster_centers_, km_matrix.cluster_centers_)


def test_kmeans_iterations_before_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        _ = model.KMeans(3).iterations


def test_kmeans_few_colours_warning_points_at_the_caller():
    two = np.zeros((4, 4, 3), dtype=np.uint8)
    two[2:] = 200
    with pytest.warns(FewColoursWarning) as record:
        km = model.KMeans(4, random_state=0).fit(two)
    assert record[0].filename == __file__
    assert km.cluster_centers_.shape == (4, 3)  # as scikit-learn: k centres, copies included
    np.testing.assert_array_equal(np.unique(km.cluster_centers_, axis=0), [[0, 0, 0], [200, 200, 200]])


# clusters_cost ---------------------------------------------------------------


def test_clusters_cost_hand_computed():
    X = np.array([[0, 0, 0], [10, 0, 0], [255, 255, 255]], dtype=np.uint8)
    centroids = np.array([[4.9, 0.0, 0.0], [254.6, 255.0, 255.0]])
    # centroids cast to uint8: (4, 0, 0) and (254, 255, 255)
    assert model.clusters_cost(X, centroids, np.array([0, 0, 1])) == 16 + 36 + 1


def test_clusters_cost_matches_numpy(noise_image):
    rng = np.random.default_rng(1)
    centroids = rng.uniform(0, 255, size=(6, 3))
    labels = rng.integers(0, 6, size=(20, 25))
    expected = _numpy_cost(noise_image, centroids, labels)
    assert model.clusters_cost(noise_image, centroids, labels) == expected
    assert model.clusters_cost(noise_image.reshape(-1, 3), centroids, labels.ravel()) == expected
    assert model.clusters_cost(image.Image(noise_image), centroids, labels.ravel()) == expected
    assert isinstance(model.clusters_cost(noise_image, centroids, labels), int)


def test_clusters_cost_lazy_matches_numpy(noise_image):
    rng = np.random.default_rng(2)
    centroids = rng.uniform(0, 255, size=(5, 3))
    labels = rng.integers(0, 5, size=(20, 25))
    expected = _numpy_cost(noise_image, centroids, labels)
    lazy_x = da.from_array(noise_image, chunks=(7, 9, 3))
    lazy_labels = da.from_array(labels, chunks=(5, 11))  # chunks unlike the image's
    assert model.clusters_cost(lazy_x, centroids, lazy_labels) == expected
    assert model.clusters_cost(lazy_x, centroids, labels) == expected
    assert model.clusters_cost(noise_image, centroids, lazy_labels) == expected
    flat = da.from_array(noise_image.reshape(-1, 3), chunks=(64, 3))
    assert model.clusters_cost(flat, centroids, labels.ravel()) == expected


def test_clusters_cost_is_exact_at_gigapixel_scale():
    # 195075 per pixel at worst: int64 sums stay exact where float32 would not
    X = np.zeros((1000, 3), dtype=np.uint8)
    cost = model.clusters_cost(X, np.array([[255.0, 255.0, 255.0]]), np.zeros(1000, dtype=int))
    assert cost == 1000 * 3 * 255**2


@pytest.mark.parametrize(
    ("centroids", "labels", "match"),
    [
        (np.zeros((2, 4)), np.zeros(6, dtype=int), r"centroids of shape \(2, 4\)"),
        (np.zeros((2, 3)), np.zeros(5, dtype=int), "labels of shape"),
    ],
)
def test_clusters_cost_errors(centroids, labels, match):
    with pytest.raises(InvalidInputError, match=match):
        model.clusters_cost(np.zeros((2, 3, 3), dtype=np.uint8), centroids, labels)


# quantize_image --------------------------------------------------------------


def test_quantize_image_returns_image_model_seconds(blobs):
    result = model.quantize_image(image.Image(blobs, title="blobs"), 4, random_state=0)
    quantized, km, seconds = result
    assert result.image is quantized and result.model is km and result.seconds == seconds
    assert isinstance(quantized, image.Image)
    assert isinstance(km, model.KMeans)
    assert quantized.title == "k = 4"
    assert quantized.shape == blobs.shape and quantized.dtype == np.uint8
    assert isinstance(seconds, float) and seconds >= 0
    # every pixel shows its centroid cast to uint8
    palette = km.cluster_centers_.astype(np.uint8)
    np.testing.assert_array_equal(quantized.rgb_matrix, palette[km.labels_])
    # which is what the walkthrough's own calls build
    walkthrough = image.rgb_vector_to_image(km.cluster_centers_[km.labels_.ravel()], blobs.shape)
    np.testing.assert_array_equal(quantized.rgb_matrix, walkthrough.rgb_matrix)
    assert model.clusters_cost(blobs, km.cluster_centers_, km.labels_) == _numpy_cost(
        blobs, km.cluster_centers_, km.labels_
    )


def test_quantize_image_exact_when_k_covers_the_colours():
    pixels = PALETTE[np.arange(12).reshape(3, 4) % 4]
    quantized, km, _ = model.quantize_image(pixels, 4, random_state=0)
    np.testing.assert_array_equal(quantized.rgb_matrix, pixels)
    assert model.clusters_cost(pixels, km.cluster_centers_, km.labels_) == 0


def test_quantize_image_passes_kmeans_parameters(blobs):
    with pytest.warns(ConvergenceWarning):
        _, km, _ = model.quantize_image(blobs, 3, random_state=0, max_iter=1, strategy="pixels")
    assert km.max_iter == 1 and km.strategy == "pixels"
    assert km.iterations == 1


def test_quantize_image_lazy_stays_lazy_and_matches_numpy(blobs):
    lazy = image.Image(da.from_array(blobs, chunks=(10, 10, 3)), title="lazy")
    quantized, km, _ = model.quantize_image(lazy, 4, random_state=0)
    assert quantized.is_lazy
    eager, eager_km, _ = model.quantize_image(blobs, 4, random_state=0)
    np.testing.assert_allclose(km.cluster_centers_, eager_km.cluster_centers_)
    np.testing.assert_array_equal(quantized.rgb_matrix.compute(), eager.rgb_matrix)
    assert model.clusters_cost(lazy, km.cluster_centers_, km.labels_) == model.clusters_cost(
        blobs, eager_km.cluster_centers_, eager_km.labels_
    )


def test_quantize_image_few_colours():
    two = np.zeros((4, 4, 3), dtype=np.uint8)
    two[2:] = 200
    with pytest.warns(FewColoursWarning):
        quantized, km, _ = model.quantize_image(two, 8, random_state=0)
    assert km.cluster_centers_.shape == (8, 3) and len(np.unique(km.cluster_centers_, axis=0)) == 2
    np.testing.assert_array_equal(quantized.rgb_matrix, two)


# record_k_metrics and plot_k_metrics -------------------------------------------


def test_record_k_metrics_costs_and_times(blobs):
    ks = [1, 2, 4]
    costs, times = model.record_k_metrics(image.Image(blobs), ks, random_state=0)
    assert len(costs) == len(times) == 3
    assert all(isinstance(c, int) for c in costs)
    assert all(isinstance(t, float) and t >= 0 for t in times)
    assert costs[0] > costs[1] > costs[2]
    # the cost recorded for k is the cost of that k's fit
    _, km, _ = model.quantize_image(blobs, 4, random_state=0)
    assert costs[2] == model.clusters_cost(blobs, km.cluster_centers_, km.labels_)
    # four noisy blobs, noise at most 3 per channel: at most 27 per pixel at k = 4
    assert costs[2] <= 27 * blobs.shape[0] * blobs.shape[1]


def test_record_k_metrics_feeds_plot_k_metrics(noise_image):
    ks = [2, 3]
    costs, times = model.record_k_metrics(noise_image, ks, random_state=0)
    fig = model.plot_k_metrics(ks, costs, times)
    try:
        np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), costs)
    finally:
        plt.close(fig)


def test_plot_k_metrics_is_re_exported():
    assert model.plot_k_metrics is plotting.plot_k_metrics


def test_docstring_examples_run():
    import doctest

    from bigquant import model as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_kmeans_predict_accepts_images(blobs):
    km = model.KMeans(4, random_state=0).fit(image.Image(blobs))
    np.testing.assert_array_equal(km.predict(image.Image(blobs)), km.labels_)
    np.testing.assert_array_equal(km.predict(blobs.reshape(-1, 3)), km.labels_.ravel())
