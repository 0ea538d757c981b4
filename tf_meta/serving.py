"""SavedModel export of a meta-learner with an adapt-and-predict endpoint for TF Serving."""

import os

import keras
import tensorflow as tf

from tf_meta import adaptation, backup, episode


def _from_logits(learner) -> bool:
    """Whether the predictions are logits: a metric learner's scores, or the loss says so."""
    if learner.metric_based:
        return True
    return bool(getattr(learner.loss, "get_config", dict)().get("from_logits", False))


def export(learner, path: str, overwrite: bool = False) -> None:
    """Writes `learner` as a SavedModel whose default signature adapts and predicts.

    Endpoints (signatures), each taking one task (no task axis) with a dynamic example
    axis, so any number of shots and queries works:

    - `serving_default(support_x, support_y, query_x)`: adapts to the support set with the
      learner's evaluation steps (through the learner's contract: `adapt_task`, then
      `predict_queries`; prototypes for a prototypical network) and returns
      `{"predictions": [queries, *outputs]}`, plus
      `"probabilities"` (softmax of the logits) for classifiers.
    - `predict(inputs)`: the base network without adaptation, `{"predictions": ...}`.
    - `embed(inputs)`, for a metric learner (`metric_based`, e.g. a prototypical
      network): `{"embeddings": [examples, dims]}`, so a client can compute and cache
      prototypes.

    Outputs are float32, also for a mixed-precision learner. The directory is written
    next to `path` first and moved into place when complete, so a failed export leaves
    nothing behind and an existing directory is replaced only by a finished one.

    Args:
        learner: A built and compiled meta-learner (`tf_meta.MetaLearner`).
        path: The SavedModel directory to write.
        overwrite: Whether to replace an existing `path`.

    Raises:
        ValueError: If `learner` is not a built meta-learner, has no inner loss (compile
            it first), or `path` exists and `overwrite` is False.
    """
    if not (isinstance(learner, keras.Model) and hasattr(learner, "adapt_task")):
        raise ValueError(f"`learner` must be a tf_meta MetaLearner; received {type(learner)}.")
    build_config = learner.get_build_config() if learner.built else None
    if not build_config or not learner.model.built:
        raise ValueError(
            "The learner is not built: call it on an episode batch (`learner(x)`) or `fit` "
            "it before exporting, so that its input shapes are known."
        )
    if not learner.metric_based and learner.inner_loss is None and learner.loss is None:
        raise ValueError(
            "The learner has no loss to adapt with: call `learner.compile(loss=...)` (or "
            "pass `inner_loss=` to it) before exporting."
        )
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path!r} exists; pass `overwrite=True` to replace it.")

    shapes = build_config.get("input_shape") or build_config["shapes_dict"]["inputs_shape"]
    feature_shape = tuple(shapes[episode.SUPPORT_X])[2:]
    target_shape = tuple(shapes[episode.SUPPORT_Y])[2:]
    features = tf.TensorSpec((None, *feature_shape), learner.model.input_dtype)
    labels = tf.TensorSpec((None, *target_shape), tf.int32 if learner.classifies else tf.float32)
    classifier = labels.dtype.is_integer
    from_logits = _from_logits(learner)

    def adapt_and_predict(support_x, support_y, query_x):
        # A loaded signature checks the dtypes of its inputs but not their shapes.
        checked = (
            tf.ensure_shape(value, spec.shape, name=key)
            for key, value, spec in zip(
                episode.KEYS,
                (support_x, support_y, query_x),
                (features, labels, features),
                strict=True,
            )
        )
        batch = tuple(value[None] for value in checked)
        inputs = dict(zip(episode.KEYS, batch, strict=True))
        predictions = adaptation.at_least_float32(learner.adapt_and_predict(inputs)[0])
        outputs = {"predictions": predictions}
        if classifier:
            outputs["probabilities"] = (
                tf.nn.softmax(predictions, axis=-1) if from_logits else predictions
            )
        return outputs

    def base_predictions(inputs):
        # The network without adaptation, in the mode the learner runs it: inference for
        # a metric learner's embeddings, training (batch statistics) otherwise.
        if learner.metric_based:
            values = learner.model(inputs, training=False)
        else:
            model = learner.model
            values = adaptation.predictions(
                model, model.trainable_variables, model.non_trainable_variables, inputs
            )
        return adaptation.at_least_float32(values)

    archive = keras.export.ExportArchive()
    archive.track(learner)
    archive.add_endpoint(
        "serving_default",
        adapt_and_predict,
        input_signature=[
            tf.TensorSpec(features.shape, features.dtype, name=episode.SUPPORT_X),
            tf.TensorSpec(labels.shape, labels.dtype, name=episode.SUPPORT_Y),
            tf.TensorSpec(features.shape, features.dtype, name=episode.QUERY_X),
        ],
    )
    inputs = [tf.TensorSpec(features.shape, features.dtype, name="inputs")]
    archive.add_endpoint(
        "predict", lambda x: {"predictions": base_predictions(x)}, input_signature=inputs
    )
    if learner.metric_based:
        archive.add_endpoint(
            "embed", lambda x: {"embeddings": base_predictions(x)}, input_signature=inputs
        )
    backup.write_directory_atomically(
        path, lambda staging: archive.write_out(staging, verbose=False), overwrite=True
    )
