import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def toy_collection(classes=12, per_class=9, shape=(4, 4, 1)):
    """Each image is filled with a unique example id, so episodes can be decoded exactly."""
    ids = np.arange(classes * per_class)
    images = np.broadcast_to(ids[:, None, None, None], (len(ids), *shape)).astype("float32")
    labels = ids // per_class * 10 + 3  # non-contiguous class ids
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ids))
    return images[order], labels[order]


def decode(x, y):
    """Example ids of an episode batch, and their true classes."""
    return {key: x[key][..., 0, 0, 0].numpy().astype(int) for key in ("support_x", "query_x")}


def take(dataset, batches):
    return [(x, y) for x, y in dataset.take(batches)]


@pytest.mark.parametrize("ways, shots, queries", [(5, 1, 3), (3, 4, 2), (7, 2, 5)])
def test_shapes_distinct_classes_disjoint_sets_and_label_permutations(ways, shots, queries):
    images, labels = toy_collection()
    per_class = 9
    dataset = tf_meta.data.episodes(
        (images, labels), ways=ways, shots=shots, queries=queries, meta_batch_size=4, seed=1
    )
    slots_of_first_class = set()
    for x, y in take(dataset, 25):
        assert x["support_x"].shape == (4, ways * shots, 4, 4, 1)
        assert x["query_x"].shape == (4, ways * queries, 4, 4, 1)
        assert x["support_y"].shape == (4, ways * shots) and y.shape == (4, ways * queries)
        assert x["support_y"].dtype == tf.int32 and y.dtype == tf.int32
        ids = decode(x, y)
        for task in range(4):
            support, query = ids["support_x"][task], ids["query_x"][task]
            assert not set(support) & set(query)
            assert len(set(support)) == len(support) and len(set(query)) == len(query)
            support_classes = support // per_class
            query_classes = query // per_class
            assert len(set(support_classes)) == ways  # distinct classes
            np.testing.assert_array_equal(x["support_y"][task], np.repeat(np.arange(ways), shots))
            np.testing.assert_array_equal(y[task], np.repeat(np.arange(ways), queries))
            # Every label maps to exactly one class, the same in support and query.
            mapping = dict(zip(x["support_y"][task].numpy(), support_classes, strict=True))
            assert [mapping[label] for label in y[task].numpy()] == list(query_classes)
            slots_of_first_class.update(label for label, cls in mapping.items() if cls == 0)
    assert len(slots_of_first_class) == ways  # no class keeps a fixed output slot


def test_same_seed_same_episodes_across_parallelism_and_different_seed_differs():
    images, labels = toy_collection()
    runs = [
        take(tf_meta.data.episodes((images, labels), 5, 1, 3, 4, seed=7, num_parallel_calls=p), 6)
        for p in (1, tf.data.AUTOTUNE)
    ]
    other = take(tf_meta.data.episodes((images, labels), 5, 1, 3, 4, seed=8), 6)
    for (x1, y1), (x2, y2), (x3, _) in zip(*runs, other, strict=True):
        for key in x1:
            np.testing.assert_array_equal(x1[key], x2[key])
        np.testing.assert_array_equal(y1, y2)
        assert np.any(x1["support_x"].numpy() != x3["support_x"].numpy())


def test_fixed_pool_is_identical_across_runs_and_finite():
    images, labels = toy_collection()
    make = lambda: tf_meta.data.episodes((images, labels), 4, 2, 2, 8, seed=3, num_tasks=20)  # noqa: E731
    first, second = list(make()), list(make())
    assert [len(y) for _, y in first] == [8, 8, 4]
    for (x1, _), (x2, _) in zip(first, second, strict=True):
        np.testing.assert_array_equal(x1["query_x"], x2["query_x"])


def test_dataset_source_and_integer_images_are_scaled():
    images = (np.arange(60) % 256).astype("uint8")[:, None, None].repeat(2, 1).repeat(2, 2)
    labels = np.arange(60) // 6
    from_arrays = take(tf_meta.data.episodes((images, labels), 3, 2, 1, 2, seed=0), 1)[0]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    from_dataset = take(tf_meta.data.episodes(dataset, 3, 2, 1, 2, seed=0), 1)[0]
    np.testing.assert_array_equal(from_arrays[0]["support_x"], from_dataset[0]["support_x"])
    assert from_arrays[0]["support_x"].dtype == tf.float32
    assert 0.0 <= from_arrays[0]["support_x"].numpy().min()
    assert from_arrays[0]["support_x"].numpy().max() <= 59 / 255 + 1e-7


def test_transform_hook_runs_per_episode_with_a_seed():
    images, labels = toy_collection()

    def add_noise(x, y, seed):
        noise = tf.random.stateless_uniform(tf.shape(x["query_x"]), seed)
        return dict(x, query_x=x["query_x"] + 1000.0 + noise), y

    plain = take(tf_meta.data.episodes((images, labels), 5, 1, 3, 2, seed=0), 1)[0][0]
    first = take(
        tf_meta.data.episodes((images, labels), 5, 1, 3, 2, seed=0, transform=add_noise), 1
    )
    again = take(
        tf_meta.data.episodes((images, labels), 5, 1, 3, 2, seed=0, transform=add_noise), 1
    )
    shifted = first[0][0]["query_x"].numpy() - plain["query_x"].numpy()
    assert 1000.0 <= shifted.min() and shifted.max() < 1001.0
    np.testing.assert_array_equal(first[0][0]["query_x"], again[0][0]["query_x"])
    np.testing.assert_array_equal(first[0][0]["support_x"], plain["support_x"])


def test_augment_classes_with_quarter_turns():
    images = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1)
    labels = np.array([5, 7])
    augmented, new_labels = tf_meta.data.augment_classes(
        images, labels, tf_meta.data.quarter_turns()
    )
    assert augmented.shape == (8, 3, 3, 1)
    np.testing.assert_array_equal(new_labels, [20, 28, 21, 29, 22, 30, 23, 31])
    np.testing.assert_array_equal(augmented[2, :, :, 0], np.rot90(images[0, :, :, 0]))
    np.testing.assert_array_equal(augmented[6, :, :, 0], np.rot90(images[0, :, :, 0], 3))


@pytest.mark.parametrize(
    "source, arguments, message",
    [
        (
            (np.zeros((10, 2)), np.arange(10) // 2),
            {"ways": 6},
            "`ways`=6 is larger than the number of classes, 5",
        ),
        (
            (np.zeros((10, 2)), np.array([0] * 9 + [1])),
            {"ways": 2, "shots": 1, "queries": 1},
            "Class 1 has 1 examples, fewer than shots",
        ),
        ((np.zeros((10, 2)), np.arange(9)), {}, "different lengths: 10 images, 9 labels"),
        ((np.zeros((10, 2)), np.linspace(0, 1, 10)), {}, "labels` must be a 1-D array of integers"),
        ((np.zeros((10, 2)), np.arange(10)), {"shots": 0}, "`shots` must be a positive integer"),
        ("not a tfds name", {}, "`split` is required"),
        (np.zeros((10, 2)), {}, "`source` must be a pair"),
    ],
)
def test_bad_input_raises_value_error(source, arguments, message):
    arguments = {"ways": 2, "shots": 1, "queries": 1, **arguments}
    with pytest.raises(ValueError, match=message):
        tf_meta.data.episodes(source, **arguments)
