"""Distribution strategies by name, and episode streams split across their replicas."""

from collections.abc import Callable

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def strategy_from_name(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy for a `--strategy` flag value.

    Args:
        name: `default` (no distribution), `mirrored` (every local GPU, else every logical
            CPU device), `multi_worker` (`MultiWorkerMirroredStrategy`, whose cluster and
            task come from the `TF_CONFIG` environment variable as TensorFlow documents) or
            `tpu` (`TPUStrategy` on the TPU found by `TPUClusterResolver`).

    Returns:
        The strategy. Create the learner and its optimizer inside `strategy.scope()`.

    Raises:
        ValueError: If `name` is not one of `STRATEGIES`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([device.name for device in gpus])
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        # NCCL is for GPUs; CPU replicas reduce on one device.
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}; received {name!r}.")


def distribute_stream(
    strategy: tf.distribute.Strategy,
    stream: Callable[[tf.distribute.InputContext | None], tf.data.Dataset],
):
    """An episode stream split across the replicas of `strategy`.

    Args:
        strategy: The distribution strategy.
        stream: `stream(input_context)` returns a `tf_meta.data` stream built with that
            `input_context`, e.g. `lambda context: tf_meta.data.sinusoid(
            meta_batch_size=32, input_context=context)`.

    Returns:
        `stream(None)` when `strategy` has a single replica in sync; else the
        distributed dataset of `strategy.distribute_datasets_from_function`, whose
        pipelines each make only their replicas' shares of every global meta-batch. Pass
        either to `fit`.
    """
    if strategy.num_replicas_in_sync == 1:
        return stream(None)
    return strategy.distribute_datasets_from_function(stream)
