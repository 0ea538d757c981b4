"""A worker of the two-process test: trains MAML and Reptile under the multi-worker strategy.

Run by `tests/multi_worker_fit_test.py` with `TF_CONFIG` set; worker 0 writes a JSON file
of the final weights and of how Keras alone behaves (keras-team/keras#20585).
"""

import json
import sys

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer

import tf_meta
from tf_meta import distribution

STEPS = 3
META_BATCH_SIZE = 4


def make_learner(name):
    """A compiled learner of the test, from the current random seed."""
    if name == "maml":
        learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01)
    else:
        learner = tf_meta.Reptile(tf_meta.models.mlp(), inner_learning_rate=0.01, inner_steps=3)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return learner


def stream(context):
    """The training stream, split by `context`."""
    return tf_meta.data.sinusoid(meta_batch_size=META_BATCH_SIZE, input_context=context)


def _keras_behaviour(strategy):
    """What Keras alone does under the strategy: a plain model's fit, a scalar's reduction."""
    with strategy.scope():
        plain = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        plain.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensors((tf.zeros([4, 1]), tf.zeros([4, 1]))).repeat()
    checks = {
        "fit": lambda: plain.fit(data, steps_per_epoch=1, verbose=0),
        "reduce": lambda: trainer.reduce_per_replica(
            strategy.run(lambda: tf.constant(1.0)), strategy, "auto"
        ),
    }
    results = {}
    for key, check in checks.items():
        try:
            check()
            results[key] = "no error"
        except Exception as error:  # noqa: BLE001 (recording what Keras raises)
            results[key] = f"{type(error).__name__}: {error}"[:300]
    return results


def main(output):
    """Trains both learners, records Keras's behaviour, and writes the results (worker 0)."""
    strategy = distribution.strategy_from_name("multi_worker")
    results = {"replicas": strategy.num_replicas_in_sync}
    for name in ("maml", "reptile"):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            learner = make_learner(name)
        history = learner.fit(
            distribution.distribute_stream(strategy, stream), steps_per_epoch=STEPS, verbose=0
        ).history
        results[name] = [weight.tolist() for weight in learner.get_weights()]
        results[f"{name}_loss"] = history["loss"][0]
    results.update(_keras_behaviour(strategy))
    if strategy.cluster_resolver.task_id == 0:
        with open(output, "w") as file:
            json.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1])
