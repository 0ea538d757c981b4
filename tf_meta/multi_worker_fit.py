"""A stand-in for keras-team/keras#20585: Keras 3 `fit` under `MultiWorkerMirroredStrategy`.

Remove this module when `tests/multi_worker_fit_test.py::test_keras_still_has_issue_20585`
fails: that test runs Keras's own `fit` under the strategy and asserts that it still breaks.
"""

import keras
import tensorflow as tf


def _multi_worker(strategy) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` over several workers."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def _first_local_value(value):
    """One replica's value of a distributed value; a plain tensor is returned as is."""
    if isinstance(value, tf.distribute.DistributedValues):
        return tf.distribute.get_strategy().experimental_local_results(value)[0]
    return value


def _as_vector(value):
    """A scalar as a one-element vector, so that Keras can reduce it along axis 0."""
    return tf.reshape(value, [1]) if value.shape.rank == 0 else value


class MultiWorkerFit(keras.Model):
    """Makes Keras 3's `fit` and `evaluate` work under `MultiWorkerMirroredStrategy`.

    Keras 3.15's TensorFlow trainer has two defects under this strategy (keras-team/keras
    #20585, open):

    1. Before the first step, `_maybe_symbolic_build` averages the first distributed batch
       across replicas, eagerly, to learn the input shapes. Under the multi-worker strategy
       this fails ("Attempt to convert a value (PerReplica...)"); under `MirroredStrategy` it
       fails when the replicas' shares differ in size (a last, partial batch: an `AddN` shape
       error, `tests/empty_batch_test.py`) and otherwise averages integer labels. Shapes are
       all it needs, so this class builds from one replica's share of the batch instead.
    2. The step function reduces every log with `strategy.reduce("MEAN", value, axis=0)`,
       which fails on the scalar metric results ("Invalid reduction dimension 0"). This class
       returns each scalar log as a one-element vector from the replica step; Keras's
       reduction along axis 0 then averages it over all replicas into a scalar.

    The first change applies under any distribution strategy, the second only under a
    `MultiWorkerMirroredStrategy` over several workers; on one device Keras's own methods run
    unchanged. Everything else (the step functions, callbacks, saving) is Keras's own.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, batches in iterator:
                with self.distribute_strategy.scope():
                    data_batch = tf.nest.map_structure(_first_local_value, next(batches))
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _make_function(self, step_function):
        if not _multi_worker(self.distribute_strategy):
            return super()._make_function(step_function)

        def step_with_vector_logs(data):
            return tf.nest.map_structure(_as_vector, step_function(data))

        return super()._make_function(step_with_vector_logs)
