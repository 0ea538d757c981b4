"""N-way K-shot episode sampling on tf.data, with stateless seeds."""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_meta.data.task_stream import task_stream
from tf_meta.episode import QUERY_X, SUPPORT_X, SUPPORT_Y


def _positive_integer(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")


def _materialize(source, split, image_key, label_key, data_dir) -> tuple[np.ndarray, np.ndarray]:
    """Reads a labelled collection into two NumPy arrays."""
    if isinstance(source, str):
        import tensorflow_datasets as tfds

        if split is None:
            raise ValueError(f"`split` is required to load the TFDS dataset {source!r}.")
        source = tfds.load(source, split=split, data_dir=data_dir).map(
            lambda example: (example[image_key], example[label_key])
        )
    if isinstance(source, tf.data.Dataset):
        batches = list(source.batch(4096).as_numpy_iterator())
        if not batches:
            raise ValueError("The `source` dataset is empty.")
        return tuple(np.concatenate(parts) for parts in zip(*batches, strict=True))
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return np.asarray(source[0]), np.asarray(source[1])
    raise ValueError(
        "`source` must be a pair (images, labels) of arrays, a tf.data.Dataset of "
        f"(image, label) pairs, or a TFDS dataset name; received {type(source).__name__}."
    )


def _class_table(images, labels, examples_per_class: int, ways: int):
    """Sorts examples by class and returns images, per-class offsets and counts."""
    if len(images) != len(labels):
        raise ValueError(
            f"`images` and `labels` have different lengths: {len(images)} images, "
            f"{len(labels)} labels."
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "`labels` must be a 1-D array of integers; received dtype "
            f"{labels.dtype} and shape {labels.shape}."
        )
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < ways:
        raise ValueError(f"`ways`={ways} is larger than the number of classes, {len(classes)}.")
    small = counts < examples_per_class
    if small.any():
        raise ValueError(
            f"Class {classes[small][0]} has {counts[small][0]} examples, fewer than shots + "
            f"queries = {examples_per_class} ({int(small.sum())} classes are that small)."
        )
    order = np.argsort(labels, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return images[order], offsets, counts


def episodes(
    source,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    meta_batch_size: int = 32,
    seed: int = 0,
    num_tasks: int | None = None,
    *,
    split: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    data_dir: str | None = None,
    transform: Callable | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """N-way K-shot episode batches from a labelled collection.

    Each episode draws `ways` distinct classes (without replacement) and, from each,
    `shots + queries` distinct examples, split into support and query sets that never
    share an example. The classes come in a random order, and their position in that order
    is their label, so labels are a random permutation of `[0, ways)` in every episode and
    no class keeps a fixed output slot. Episode `i` is drawn from the stateless seed
    `(seed, i)`: the same seed gives the same episodes whatever the parallelism or
    prefetching. The collection is held in memory as one tensor, sorted by class; the
    per-episode path is graph code (top-k on random keys, one gather) inside `tf.data`.

    Args:
        source: A pair `(images, labels)` of arrays; a `tf.data.Dataset` of `(image,
            label)` pairs; or a TFDS dataset name (with `split`, `image_key`,
            `label_key`, `data_dir`). Integer images are scaled to [0, 1].
        ways: Classes per episode (N).
        shots: Support examples per class (K).
        queries: Query examples per class.
        meta_batch_size: Episodes per batch.
        seed: Seed of the episode stream; evaluation pools should use another seed.
        num_tasks: None for an endless stream (training); an integer for a finite, fixed
            pool of that many episodes (evaluation), whose last batch may be smaller.
        split: The TFDS split, when `source` is a TFDS name.
        image_key: The image feature of the TFDS dataset.
        label_key: The label feature of the TFDS dataset.
        data_dir: The TFDS data directory.
        transform: A per-episode hook `transform(x, y, seed) -> (x, y)` run in the graph on
            each episode before batching; `seed` is a stateless seed (shape [2]) unique
            to the episode, for random augmentations that stay deterministic.
        num_parallel_calls: Parallelism of episode construction.
        start_step: The first meta-step of an endless stream, to resume a run where it
            stopped (see `task_stream`).
        input_context: Under `strategy.distribute_datasets_from_function`, this pipeline's
            `tf.distribute.InputContext`: the pipeline then makes its replicas' shares of
            each global meta-batch of `meta_batch_size` tasks (see `task_stream`).

    Returns:
        A `tf.data.Dataset` of `(x, query_y)` with x = {"support_x": [T, ways * shots,
        *image_shape], "support_y": [T, ways * shots], "query_x": [T, ways * queries,
        *image_shape]} (float32 images, int32 labels) and query_y `[T, ways * queries]`.
        Within an episode, examples are grouped by label: support example `j` has label
        `j // shots`.

    Raises:
        ValueError: If a count is not a positive integer, `ways` exceeds the number of
            classes, a class has fewer than `shots + queries` examples, images and labels
            differ in length, or labels are not integers.

    References:
        Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016 (the episodic
        protocol).
    """
    for name, value in (
        ("ways", ways),
        ("shots", shots),
        ("queries", queries),
        ("meta_batch_size", meta_batch_size),
        ("num_tasks", 1 if num_tasks is None else num_tasks),
    ):
        _positive_integer(name, value)
    examples = shots + queries
    images, labels = _materialize(source, split, image_key, label_key, data_dir)
    images, offsets, counts = _class_table(images, labels, examples, ways)
    scale = 1.0 / np.iinfo(images.dtype).max if np.issubdtype(images.dtype, np.integer) else 1.0
    images = tf.constant(images)
    offsets = tf.constant(offsets, tf.int64)
    counts = tf.constant(counts, tf.int64)
    largest_class = int(counts.numpy().max())
    num_classes = int(counts.shape[0])
    image_shape = images.shape[1:]

    def episode(index):
        class_seed, example_seed, transform_seed = tf.unstack(
            tf.random.experimental.stateless_split(
                tf.stack([tf.constant(seed, tf.int64), index]), num=3
            )
        )
        _, classes = tf.math.top_k(tf.random.stateless_uniform([num_classes], class_seed), ways)
        class_counts = tf.gather(counts, classes)
        keys = tf.random.stateless_uniform([ways, largest_class], example_seed)
        keys = tf.where(tf.range(largest_class, dtype=tf.int64) < class_counts[:, None], keys, -1.0)
        _, positions = tf.math.top_k(keys, examples)
        chosen = tf.gather(offsets, classes)[:, None] + tf.cast(positions, tf.int64)
        batch = tf.cast(tf.gather(images, chosen), tf.float32) * scale
        label_range = tf.range(ways, dtype=tf.int32)
        x = {
            SUPPORT_X: tf.reshape(batch[:, :shots], [ways * shots, *image_shape]),
            SUPPORT_Y: tf.repeat(label_range, shots),
            QUERY_X: tf.reshape(batch[:, shots:], [ways * queries, *image_shape]),
        }
        y = tf.repeat(label_range, queries)
        if transform is not None:
            x, y = transform(x, y, transform_seed)
        return x, y

    return task_stream(
        episode, meta_batch_size, num_tasks, start_step, input_context, num_parallel_calls
    )


def augment_classes(
    images: np.ndarray, labels: np.ndarray, transforms: Sequence[Callable[[np.ndarray], np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Makes each transform of each class a class of its own.

    The standard example is Omniglot's rotations by 0, 90, 180 and 270 degrees (see
    `quarter_turns`): every character under every rotation is a new class, as in MAML and
    Prototypical Networks.

    Args:
        images: Images `[examples, *image_shape]`.
        labels: Integer labels `[examples]`.
        transforms: Functions from a batch of images to a batch of the same shape.

    Returns:
        `(images, labels)` with `len(transforms)` times as many examples; the image
        `transforms[t](images)[i]` has label `labels[i] * len(transforms) + t`.

    Raises:
        ValueError: If `transforms` is empty or changes the shape of the images.
    """
    if not transforms:
        raise ValueError("`transforms` must contain at least one function.")
    images = np.asarray(images)
    labels = np.asarray(labels)
    augmented = [np.asarray(transform(images)) for transform in transforms]
    for transformed in augmented:
        if transformed.shape != images.shape:
            raise ValueError(
                f"A transform changed the images' shape from {images.shape} to {transformed.shape}."
            )
    count = len(transforms)
    new_labels = [labels.astype(np.int64) * count + index for index in range(count)]
    return np.concatenate(augmented), np.concatenate(new_labels)


def quarter_turns(turns: Sequence[int] = (0, 1, 2, 3)) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Rotations of image batches `[examples, height, width, ...]` by `90 * k` degrees.

    Args:
        turns: Counter-clockwise quarter turns, one transform each.

    Returns:
        One function per entry of `turns`, for `augment_classes`.
    """
    return [lambda images, k=turn: np.rot90(images, k, axes=(1, 2)) for turn in turns]
