import math

import numpy as np
import pytest

import tf_meta


def materialize(dataset):
    return [({k: v.numpy() for k, v in x.items()}, y.numpy()) for x, y in dataset]


def test_shapes_and_episode_contract():
    x, y = next(iter(tf_meta.data.sinusoid(shots=7, queries=3, meta_batch_size=4, seed=0)))
    assert {k: tuple(v.shape) for k, v in x.items()} == {
        "support_x": (4, 7, 1),
        "support_y": (4, 7, 1),
        "query_x": (4, 3, 1),
    }
    assert tuple(y.shape) == (4, 3, 1)
    tf_meta.episode.validate_episode(x, y)


def test_same_seed_same_tasks_and_different_seed_different_tasks():
    first = materialize(tf_meta.data.sinusoid(meta_batch_size=5, seed=3, num_tasks=20))
    second = materialize(tf_meta.data.sinusoid(meta_batch_size=5, seed=3, num_tasks=20))
    other = materialize(tf_meta.data.sinusoid(meta_batch_size=5, seed=4, num_tasks=20))
    for (x1, y1), (x2, y2), (x3, _) in zip(first, second, other, strict=True):
        np.testing.assert_array_equal(y1, y2)
        for key in x1:
            np.testing.assert_array_equal(x1[key], x2[key])
        assert np.abs(x1["support_x"] - x3["support_x"]).max() > 0.1


def test_batching_does_not_change_the_tasks():
    by_five = materialize(tf_meta.data.sinusoid(meta_batch_size=5, seed=0, num_tasks=10))
    by_ten = materialize(tf_meta.data.sinusoid(meta_batch_size=10, seed=0, num_tasks=10))
    np.testing.assert_array_equal(np.concatenate([y for _, y in by_five]), by_ten[0][1])


def test_finite_pool_size_and_endless_stream():
    pool = materialize(tf_meta.data.sinusoid(meta_batch_size=25, seed=1, num_tasks=60))
    assert [len(y) for _, y in pool] == [25, 25, 10]
    stream = tf_meta.data.sinusoid(meta_batch_size=25, seed=1)
    assert len(list(stream.take(50))) == 50


def test_targets_follow_the_recoverable_parameters_and_ranges():
    ((x, y),) = materialize(
        tf_meta.data.sinusoid(shots=5, queries=5, meta_batch_size=200, seed=2, num_tasks=200)
    )
    amplitude, phase = (p.numpy() for p in tf_meta.data.sinusoid_parameters(np.arange(200), seed=2))
    expected = amplitude[:, None, None] * np.sin(x["query_x"] - phase[:, None, None])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        x["support_y"],
        amplitude[:, None, None] * np.sin(x["support_x"] - phase[:, None, None]),
        rtol=1e-5,
        atol=1e-5,
    )
    assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0 and amplitude.std() > 1.0
    assert 0.0 <= phase.min() and phase.max() <= math.pi and phase.std() > 0.5
    inputs = np.concatenate([x["support_x"], x["query_x"]], axis=1)
    assert -5.0 <= inputs.min() < -4.5 and 4.5 < inputs.max() <= 5.0
    # Support and query inputs of a task are independent draws.
    assert np.abs(x["support_x"] - x["query_x"]).min() > 0


@pytest.mark.parametrize(
    "arguments", [{"shots": 0}, {"queries": -1}, {"meta_batch_size": 2.5}, {"num_tasks": 0}]
)
def test_bad_arguments_raise(arguments):
    (name,) = arguments
    with pytest.raises(ValueError, match=name):
        tf_meta.data.sinusoid(**arguments)
