import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def _learner():
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return learner


def _batch():
    return next(iter(tf_meta.data.sinusoid(meta_batch_size=4, seed=1, num_tasks=4)))


def test_inner_loss_curve_matches_an_independent_inner_loop():
    learner = _learner()
    curve = tf_meta.callbacks.InnerLossCurve(_batch(), steps=2)
    history = learner.fit(
        tf_meta.data.sinusoid(meta_batch_size=4),
        steps_per_epoch=5,
        epochs=2,
        callbacks=[curve],
        verbose=0,
    ).history
    assert len(history["inner_loss_step_2"]) == 2
    # The same inner loop by hand: plain SGD on each task's support MSE, then the MSE again.
    x, _ = _batch()
    expected = np.zeros(3)
    for task in range(4):
        clone = keras.models.clone_model(learner.model)
        clone.set_weights(learner.model.get_weights())
        for step in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(clone(x["support_x"][task]) - x["support_y"][task]))
            expected[step] += float(loss) / 4
            gradients = tape.gradient(loss, clone.trainable_variables)
            for variable, gradient in zip(clone.trainable_variables, gradients, strict=True):
                variable.assign_sub(0.01 * gradient)
    np.testing.assert_allclose(
        [history[f"inner_loss_step_{step}"][-1] for step in range(3)], expected, rtol=1e-4
    )
    assert expected[2] < expected[1] < expected[0]


def test_inner_loss_curve_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`steps` must be a non-negative integer"):
        tf_meta.callbacks.InnerLossCurve(_batch(), steps=-1)
    with pytest.raises(ValueError, match="Episode keys missing"):
        tf_meta.callbacks.InnerLossCurve(({"support_x": np.zeros([1, 2, 1])}, None), steps=1)
