"""scikit-learn's estimator checks on both estimators (skipped without scikit-learn).

The four checks listed in ``EXPECTED`` fail, each for the reason given; every other
check passes. scikit-learn is a test dependency only: the estimators import it solely
inside ``__sklearn_tags__``, which scikit-learn alone calls.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from bigquant import KMeans, MiniBatchKMeans  # noqa: E402

EXPECTED = {
    "check_estimators_unfitted": "predict before fit raises bigquant's NotFittedError (a ValueError and "
                                 "AttributeError), not scikit-learn's class, which bigquant does not import",
    "check_sample_weight_equivalence_on_dense_data": "k-means++ samples weighted points and repeated points "
                                                     "differently: another local optimum",
    "check_complex_data": "complex arrays raise InputTypeError (a TypeError: tests/test_bad_input.py); "
                          "scikit-learn wants a ValueError",
    "check_dtype_object": "object arrays raise InputTypeError (tests/test_bad_input.py); scikit-learn "
                          "converts arrays of numbers",
}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [KMeans(n_clusters=3, random_state=0),
                                       MiniBatchKMeans(n_clusters=3, random_state=0)], ids=repr)
def test_check_estimator(estimator):
    results = check_estimator(estimator, expected_failed_checks=EXPECTED, on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert not failed
    passed = [r for r in results if r["status"] == "passed"]
    assert len(passed) >= 40
