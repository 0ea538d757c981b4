"""The order of tasks in an episode stream, sharded across replicas and workers."""

from collections.abc import Callable

import tensorflow as tf


def task_stream(
    episode: Callable,
    meta_batch_size: int,
    num_tasks: int | None = None,
    start_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Batches of `episode(task_index)`, in the task order of a (sharded) stream.

    The global meta-batch of step `s` is tasks `[s * meta_batch_size, (s + 1) *
    meta_batch_size)`.

    With an `input_context` (from `strategy.distribute_datasets_from_function`), the
    pipeline of worker `w` of `W` makes only its share of each global meta-batch, in
    per-replica batches: tasks `s * meta_batch_size + w * meta_batch_size / W + j`. No two
    replicas see the same task in a step, and together they see exactly the tasks a single
    device would, so the run is the same as on one device. Episodes are drawn from
    stateless seeds of their global index, which is a function of the step, the shard and
    the position in it; a run resumed at `start_step` therefore sees the same tasks.

    Args:
        episode: `episode(task_index) -> (x, y)` for one task, from a stateless seed.
        meta_batch_size: Tasks per global meta-batch (over all replicas).
        num_tasks: None for an endless stream; else a finite pool of that many tasks.
        start_step: The first meta-step of an endless stream (to resume a run).
        input_context: The `tf.distribute.InputContext` of this input pipeline, or None.
        num_parallel_calls: Parallelism of episode construction.

    Returns:
        A `tf.data.Dataset` of batched episodes, per replica under an `input_context`.

    Raises:
        ValueError: If `meta_batch_size` is not a multiple of the number of replicas, a
            sharded pool's `num_tasks` is not a multiple of `meta_batch_size`, or
            `start_step` is negative or given with a finite pool.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
    replicas = input_context.num_replicas_in_sync if input_context else 1
    if meta_batch_size % replicas:
        raise ValueError(
            f"`meta_batch_size`={meta_batch_size} must be a multiple of the "
            f"{replicas} replicas in sync, so that every replica gets as many tasks."
        )
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer; received {start_step!r}.")
    if num_tasks is not None and start_step:
        raise ValueError("`start_step` applies to an endless stream; `num_tasks` was given.")
    if num_tasks is not None and replicas > 1 and num_tasks % meta_batch_size:
        raise ValueError(
            f"`num_tasks`={num_tasks} must be a multiple of `meta_batch_size`="
            f"{meta_batch_size} when the pool is split over {replicas} replicas."
        )
    share = meta_batch_size // pipelines

    def task_index(position):
        step = start_step + position // share
        return step * meta_batch_size + pipeline * share + position % share

    positions = (
        tf.data.Dataset.counter()
        if num_tasks is None
        else tf.data.Dataset.range(-(-num_tasks // meta_batch_size) * share)
    )
    if num_tasks is not None and replicas == 1:
        positions = positions.take(num_tasks)
    return (
        positions.map(
            lambda position: episode(task_index(position)),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
        .batch(meta_batch_size // replicas, drop_remainder=num_tasks is None)
        .prefetch(tf.data.AUTOTUNE)
    )
