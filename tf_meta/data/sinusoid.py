"""The sinusoid regression task family of MAML (Finn et al. 2017, section 5.1)."""

import math

import tensorflow as tf

from tf_meta.data.task_stream import task_stream
from tf_meta.episode import QUERY_X, SUPPORT_X, SUPPORT_Y

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


def _task_seeds(task_index: tf.Tensor, seed: int) -> tf.Tensor:
    """Three independent stateless seeds for one task: amplitude, phase and inputs."""
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(task_index, tf.int64)])
    return tf.random.experimental.stateless_split(pair, num=3)


def _parameters(seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    amplitude = tf.random.stateless_uniform([], seeds[0], *AMPLITUDE_RANGE)
    phase = tf.random.stateless_uniform([], seeds[1], *PHASE_RANGE)
    return amplitude, phase


def sinusoid_parameters(task_indices, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """The amplitude and phase of the sinusoid tasks with the given indices.

    Task `i` of the stream `sinusoid(seed=s)` is `y = amplitude * sin(x - phase)` with
    the values returned here for `task_indices=[i]`, `seed=s`.

    Args:
        task_indices: Integer indices of tasks in the stream.
        seed: The stream's seed.

    Returns:
        `(amplitudes, phases)`, each float32 shaped like `task_indices`.
    """
    task_indices = tf.convert_to_tensor(task_indices, tf.int64)
    amplitudes, phases = tf.map_fn(
        lambda index: _parameters(_task_seeds(index, seed)),
        tf.reshape(task_indices, [-1]),
        fn_output_signature=(tf.float32, tf.float32),
    )
    shape = tf.shape(task_indices)
    return tf.reshape(amplitudes, shape), tf.reshape(phases, shape)


def sinusoid(
    shots: int = 10,
    queries: int = 10,
    meta_batch_size: int = 25,
    seed: int = 0,
    num_tasks: int | None = None,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Episode batches of sinusoid regression tasks.

    Each task is `y = amplitude * sin(x - phase)` with amplitude ~ U[0.1, 5], phase ~
    U[0, pi] and inputs x ~ U[-5, 5], as in MAML. Task `i` is drawn from the stateless
    seed `(seed, i)`, so the same seed gives the same tasks whatever the parallelism, and
    `sinusoid_parameters` recovers their amplitude and phase.

    Args:
        shots: Support examples per task (K in the paper).
        queries: Query examples per task.
        meta_batch_size: Tasks per batch.
        seed: Seed of the task stream; use different seeds for training and evaluation.
        num_tasks: None for an endless stream (training); an integer for a finite, fixed
            pool of that many tasks (evaluation), whose last batch may be smaller.
        start_step: The first meta-step of an endless stream, to resume a run where it
            stopped (see `task_stream`).
        input_context: Under `strategy.distribute_datasets_from_function`, this pipeline's
            `tf.distribute.InputContext`: the pipeline then makes its replicas' shares of
            each global meta-batch of `meta_batch_size` tasks (see `task_stream`).

    Returns:
        A `tf.data.Dataset` of `(x, query_y)` with x = {"support_x": [T, shots, 1],
        "support_y": [T, shots, 1], "query_x": [T, queries, 1]} and query_y
        `[T, queries, 1]`, float32.

    Raises:
        ValueError: If a count is not a positive integer.

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
    """
    for argument, value in (
        ("shots", shots),
        ("queries", queries),
        ("meta_batch_size", meta_batch_size),
        ("num_tasks", 1 if num_tasks is None else num_tasks),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{argument}` must be a positive integer; received {value!r}.")
    examples = shots + queries

    def episode(task_index):
        seeds = _task_seeds(task_index, seed)
        amplitude, phase = _parameters(seeds)
        inputs = tf.random.stateless_uniform([examples, 1], seeds[2], *INPUT_RANGE)
        targets = amplitude * tf.sin(inputs - phase)
        x = {
            SUPPORT_X: inputs[:shots],
            SUPPORT_Y: targets[:shots],
            QUERY_X: inputs[shots:],
        }
        return x, targets[shots:]

    return task_stream(episode, meta_batch_size, num_tasks, start_step, input_context)
