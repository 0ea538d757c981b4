"""One task of an episode batch, as a learner's hooks receive it."""

from typing import NamedTuple

import tensorflow as tf


class Task(NamedTuple):
    """One task of an episode batch, inside a learner's task loop.

    Attributes:
        weights: The initial fast weights: one tensor per trainable variable of the
            wrapped network, in the order of `model.trainable_variables`. In a training
            step they are watched by the tape whose gradient `MetaLearner.meta_gradient`
            takes.
        non_trainable_weights: One tensor per non-trainable variable of the network.
        learned: The values of the learner's own trainable variables (learned inner rates),
            also watched. Reading those variables inside the task loop yields these values.
        support_x: Support inputs `[shots, *features]`.
        support_y: Support targets `[shots, *targets]` (one-hot `[shots, ways]` for a
            metric learner, see `MetaLearner.metric_based`).
        query_x: Query inputs `[queries, *features]`.
    """

    weights: list[tf.Tensor]
    non_trainable_weights: list[tf.Tensor]
    learned: list[tf.Tensor]
    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
