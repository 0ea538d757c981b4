"""Prototypical Networks: few-shot classification by distance to class means."""

import keras
import tensorflow as tf

from tf_meta.algorithms.meta_learner import MetaLearner

DISTANCES = ("squared_euclidean", "cosine")


@keras.saving.register_keras_serializable(package="tf_meta")
class PrototypicalNetwork(MetaLearner):
    """Prototypical Networks: a learned embedding where each class is its mean.

    Each task's adaptation embeds its support examples with the wrapped encoder and takes
    each class's prototype as the mean embedding of its support examples (`adapt_task`);
    each query is scored by the negative squared Euclidean distance to every prototype
    (or by cosine similarity times `cosine_scale`; `predict_queries`). The compiled loss
    (sparse categorical cross-entropy with `from_logits=True`) on these logits trains the
    encoder. There is no inner loop: `adapt` returns the prototypes. The number of classes
    is read from the support labels (`max + 1` over the batch), so an encoder trained on
    20-way episodes evaluates on 5-way ones unchanged.

    In training, each episode's support and query examples are embedded together as one
    batch, as in the paper's code: batch normalization uses each episode's own statistics,
    and its moving statistics move by the mean of the episodes' updates (see
    `MetaLearner`). Evaluation uses the moving statistics. `vectorize_tasks=True` embeds
    the episodes together (`tf.vectorized_map`), one large batch as accelerators prefer
    and XLA compiles, each episode still normalized by itself.

    Args:
        model: The encoder, mapping examples to embeddings `[examples, dimensions]` (e.g.
            `tf_meta.models.conv4(ways=None)`).
        distance: `"squared_euclidean"` (the paper's) or `"cosine"`.
        cosine_scale: Multiplier of cosine similarities (their range [-1, 1] is too
            narrow for a softmax).
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: If `distance` is unknown, `cosine_scale` is not positive or
            `gradient_checkpointing` is set (there is no inner loop); when the step is
            traced, if the support targets are not integer class labels `[tasks, shots]`.

    References:
        Snell, Swersky and Zemel. Prototypical Networks for Few-shot Learning. NeurIPS
        2017. https://arxiv.org/abs/1703.05175
    """

    metric_based = True

    def __init__(
        self,
        model: keras.Model,
        distance: str = "squared_euclidean",
        cosine_scale: float = 10.0,
        **kwargs,
    ):
        if distance not in DISTANCES:
            raise ValueError(f"`distance` must be one of {DISTANCES}; received {distance!r}.")
        if (
            isinstance(cosine_scale, bool)
            or not isinstance(cosine_scale, (int, float))
            or not 0 < cosine_scale < float("inf")
        ):
            raise ValueError(
                f"`cosine_scale` must be a finite positive number; received {cosine_scale!r}."
            )
        if kwargs.get("gradient_checkpointing"):
            raise ValueError(
                "`gradient_checkpointing` recomputes inner steps; a prototypical network has none."
            )
        super().__init__(model, **kwargs)
        self.distance = distance
        self.cosine_scale = float(cosine_scale)

    def _embed(self, examples, training):
        return tf.cast(self.model(examples, training=training), tf.float32)

    def adapt_task(self, task, steps=None, training=False):
        """The class prototypes `[ways, dimensions]`, and in training the query embeddings.

        Args:
            task: The task, its `support_y` one-hot `[shots, ways]`.
            steps: Ignored: a prototypical network has no inner loop.
            training: Whether the encoder runs in training mode; then support and queries
                are embedded as one batch and the query embeddings returned too.

        Returns:
            `{"prototypes": [ways, dimensions]}`, with `"queries"` in training.
        """
        del steps
        shots = tf.shape(task.support_x)[0]
        if training:
            embeddings = self._embed(tf.concat([task.support_x, task.query_x], 0), True)
            support, queries = embeddings[:shots], {"queries": embeddings[shots:]}
        else:
            support, queries = self._embed(task.support_x, False), {}
        one_hot = tf.cast(task.support_y, support.dtype)
        prototypes = (
            tf.matmul(one_hot, support, transpose_a=True) / tf.reduce_sum(one_hot, axis=0)[:, None]
        )
        return {"prototypes": prototypes, **queries}

    def predict_queries(self, task, adapted, training=False):
        """Logits `[queries, ways]` of the queries against the prototypes."""
        queries = adapted.get("queries")
        if queries is None:
            queries = self._embed(task.query_x, training)
        return self._logits(adapted["prototypes"], queries)

    def _logits(self, prototypes, query_embeddings):
        """Scores of query embeddings `[queries, dimensions]` against prototypes.

        Returns:
            Logits `[queries, ways]`.
        """
        if self.distance == "cosine":
            query = tf.math.l2_normalize(query_embeddings, axis=-1)
            centers = tf.math.l2_normalize(prototypes, axis=-1)
            return self.cosine_scale * tf.matmul(query, centers, transpose_b=True)
        return -(
            tf.reduce_sum(tf.square(query_embeddings), -1)[:, None]
            - 2.0 * tf.matmul(query_embeddings, prototypes, transpose_b=True)
            + tf.reduce_sum(tf.square(prototypes), -1)[None, :]
        )

    def adapt(self, support_x, support_y, steps=None):
        """The prototypes of one task, `[ways, dimensions]` (no weights change).

        See `MetaLearner.adapt` for the arguments.
        """
        return super().adapt(support_x, support_y, steps)["prototypes"]

    def get_config(self):
        """The learner's configuration, including the distance."""
        config = super().get_config()
        config.pop("inner_loss")
        return {**config, "distance": self.distance, "cosine_scale": self.cosine_scale}
