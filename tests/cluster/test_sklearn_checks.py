"""scikit-learn's estimator checks on both estimators (skipped without scikit-learn).

The two checks listed in ``EXPECTED`` fail, each for the reason given; every other
check passes (``check_estimators_unfitted``: the NotFittedError raised is also
scikit-learn's once scikit-learn is loaded; ``check_complex_data``: complex data
raise ComplexInputError, an InputTypeError and a ValueError). scikit-learn is a
test dependency only: the estimators import it solely inside ``__sklearn_tags__``,
which scikit-learn alone calls.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from bigquant import KMeans, MiniBatchKMeans  # noqa: E402

EXPECTED = {
    "check_sample_weight_equivalence_on_dense_data": "k-means++ samples weighted points and repeated points "
                                                     "differently: another local optimum (and MiniBatchKMeans "
                                                     "draws its batches by position: other samples)",
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
