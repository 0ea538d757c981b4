"""Meta-features: values checked by hand on tasks whose answers are known."""

import numpy as np
import pytest

from tf_meta.tuners.meta_features import FEATURES, describe, meta_features


def test_regression_features_by_hand():
    x = np.arange(-8, 8, dtype=np.float32)[:, None]  # 16 examples, one input column
    features = meta_features(x, 3 * x + 1)
    assert list(features) == list(FEATURES)
    assert features["log_examples"] == pytest.approx(np.log(16))
    assert features["log_input_dimension"] == 0.0
    assert features["classification"] == 0.0
    assert features["log_classes"] == 0.0
    assert features["log_feature_scale"] == pytest.approx(np.log(np.sqrt(np.mean(x**2))))
    assert features["log_target_scale"] == pytest.approx(
        np.log(np.sqrt(np.mean((3 * x + 1) ** 2))), rel=1e-6
    )
    assert features["linear_probe_residual"] == pytest.approx(0.0, abs=1e-9)
    # The nearest neighbour of each scored example is one step away: an error of 3 each.
    scored = (3 * x + 1)[1::2]
    assert features["neighbour_probe_residual"] == pytest.approx(9 / np.var(scored))


def test_classification_features_by_hand():
    x = np.random.default_rng(0).normal(size=(40, 3))
    labels = np.array([0] * 20 + [1] * 10 + [2] * 10, np.int32)
    features = meta_features(x, labels)
    frequencies = np.array([0.5, 0.25, 0.25])
    assert features["classification"] == 1.0
    assert features["log_classes"] == pytest.approx(np.log(3))
    assert features["class_entropy"] == pytest.approx(
        -np.sum(frequencies * np.log(frequencies)) / np.log(3)
    )
    assert features["log_target_scale"] == 0.0
    assert features["log_input_dimension"] == pytest.approx(np.log(3))
    # Labels unrelated to the inputs: the probes are no better than the class frequencies.
    assert features["linear_probe_residual"] > 0.9
    np.testing.assert_array_equal(describe(x, labels), [features[name] for name in FEATURES])


def test_images_are_flattened_and_scales_read_as_logarithms():
    rng = np.random.default_rng(1)
    small = meta_features(0.01 * rng.normal(size=(20, 4, 4, 1)), np.arange(20) % 2)
    large = meta_features(100 * rng.normal(size=(20, 4, 4, 1)), np.arange(20) % 2)
    assert small["log_input_dimension"] == pytest.approx(np.log(16))
    assert large["log_feature_scale"] - small["log_feature_scale"] == pytest.approx(
        np.log(1e4), abs=0.3
    )


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((5, 2)), np.zeros(4), "same number of examples"),
        (np.zeros((3, 2)), np.zeros(3), "at least 4 examples"),
        (np.full((5, 2), np.inf), np.zeros(5), "`x` holds a NaN or an infinity"),
        (np.zeros((5, 2)), np.full(5, np.nan), "`y` holds a NaN or an infinity"),
        (np.zeros((5, 2)), np.array([0, 1, -1, 0, 1]), "non-negative"),
    ],
)
def test_bad_tasks_are_refused(x, y, message):
    with pytest.raises(ValueError, match=message):
        meta_features(x, y)
