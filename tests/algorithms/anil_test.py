import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def float64_mlp():
    return keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(6, activation="tanh", dtype="float64", name="body"),
            keras.layers.Dense(1, dtype="float64", name="head"),
        ]
    )


def sinusoid_batch():
    x, y = next(iter(tf_meta.data.sinusoid(shots=5, queries=5, meta_batch_size=2, seed=3)))
    return {k: v.numpy().astype("float64") for k, v in x.items()}, y.numpy().astype("float64")


def test_body_receives_no_inner_update_and_head_does():
    x, _ = sinusoid_batch()
    learner = tf_meta.ANIL(
        float64_mlp(), inner_learning_rate=0.1, eval_inner_steps=5, inner_loss="mse"
    )
    adapted = learner.adapt(x["support_x"][0], x["support_y"][0])
    body_kernel, body_bias, head_kernel, head_bias = learner.model.trainable_variables
    np.testing.assert_array_equal(adapted[0], body_kernel.numpy())
    np.testing.assert_array_equal(adapted[1], body_bias.numpy())
    assert np.abs(adapted[2] - head_kernel.numpy()).max() > 1e-3
    # The head's update is plain gradient descent on the support loss with a fixed body.
    features = np.tanh(x["support_x"][0] @ body_kernel.numpy() + body_bias.numpy())
    kernel, bias = head_kernel.numpy(), head_bias.numpy()
    for _ in range(5):
        residual = features @ kernel + bias - x["support_y"][0]
        kernel = kernel - 0.1 * 2 * features.T @ residual / len(residual)
        bias = bias - 0.1 * 2 * residual.mean(axis=0)
    np.testing.assert_allclose(adapted[2], kernel, rtol=1e-10)
    np.testing.assert_allclose(adapted[3], bias, rtol=1e-10)


def test_meta_gradient_matches_finite_differences(finite_differences):
    x, y = sinusoid_batch()
    learner = tf_meta.ANIL(float64_mlp(), inner_learning_rate=0.1, inner_steps=2, inner_loss="mse")

    def meta_loss():
        return tf.reduce_mean(tf.square(y - learner(x, training=True)))

    with tf.GradientTape() as tape:
        loss = meta_loss()
    computed = tape.gradient(loss, learner.trainable_variables)
    expected = finite_differences(tf.function(meta_loss), learner.trainable_variables)
    for gradient, difference in zip(computed, expected, strict=True):
        np.testing.assert_allclose(gradient.numpy(), difference, rtol=1e-5, atol=1e-9)


def test_named_layers_and_unknown_names():
    learner = tf_meta.ANIL(float64_mlp(), adapted_layers=["body", "head"], inner_loss="mse")
    assert learner.adapted_indices() == [0, 1, 2, 3]
    assert tf_meta.ANIL(float64_mlp(), adapted_layers="body").adapted_indices() == [0, 1]
    with pytest.raises(ValueError, match="'neck'.*'body', 'head'"):
        tf_meta.ANIL(float64_mlp(), adapted_layers=["neck"])
    assert tf_meta.ANIL.from_config(learner.get_config()).adapted_layers == ["body", "head"]


def test_short_fit_on_sinusoids_lowers_post_adaptation_mse():
    learner = tf_meta.ANIL(tf_meta.models.mlp(), inner_learning_rate=0.01, eval_inner_steps=5)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=50, seed=1, num_tasks=100)
    before = learner.evaluate(pool, verbose=0)
    learner.fit(tf_meta.data.sinusoid(seed=0), steps_per_epoch=1500, verbose=0, shuffle=False)
    # Only the 41 head weights adapt, so ANIL improves less than MAML on this budget.
    assert learner.evaluate(pool, verbose=0) < 0.75 * before


@pytest.mark.parametrize("multi_step_loss_steps", [0, 10])
def test_sequential_body_runs_once_with_the_meta_gradient_of_the_whole_network(
    monkeypatch, multi_step_loss_steps
):
    keras.utils.set_random_seed(0)
    sequential = tf_meta.models.conv4(input_shape=(16, 16, 1), ways=3, filters=4)
    inputs = keras.Input((16, 16, 1))
    outputs = inputs
    for layer in sequential.layers:
        outputs = layer(outputs)
    functional = keras.Model(inputs, outputs)  # the same layers, run whole at every step
    first_layer_calls = []
    first_layer_call = sequential.layers[0].call
    monkeypatch.setattr(
        sequential.layers[0],
        "call",
        lambda *args, **kwargs: first_layer_calls.append(1) or first_layer_call(*args, **kwargs),
    )
    rng = np.random.default_rng(0)
    x = {
        "support_x": rng.normal(size=(2, 6, 16, 16, 1)).astype("float32"),
        "support_y": np.tile([0, 1, 2], (2, 2)).astype("int32"),
        "query_x": rng.normal(size=(2, 6, 16, 16, 1)).astype("float32"),
    }
    y = np.tile([0, 1, 2], (2, 2)).astype("int32")
    results, calls = [], []  # per network: the meta-gradient, the adapted weights; body runs
    for network in (sequential, functional):
        learner = tf_meta.ANIL(
            network,
            inner_learning_rate=0.5,
            inner_steps=3,
            multi_step_loss_steps=multi_step_loss_steps,
        )
        learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        first_layer_calls.clear()
        with tf.GradientTape() as tape:
            loss = learner._whole_batch_step(x, y, None, averaged=True)[0]
        calls.append(len(first_layer_calls))
        results.append(tape.gradient(loss, learner.trainable_variables))
        results.append(learner.adapt(x["support_x"][0], x["support_y"][0]))
    assert tf_meta.ANIL(sequential).body_and_head() is not None
    assert tf_meta.ANIL(functional).body_and_head() is None
    # Two tasks: the body runs on each task's support and query inputs once; the whole
    # network runs at each of the 3 inner steps, and on the queries once or after each step.
    assert calls == [4, 2 * (3 + (3 if multi_step_loss_steps else 1))]
    # atol: the convolution bias, which batch normalization cancels, has a gradient of 0
    # up to rounding (1e-7).
    for split, whole in zip(results[0] + results[1], results[2] + results[3], strict=True):
        np.testing.assert_allclose(np.asarray(split), np.asarray(whole), rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(g).max()) for g in results[0][:-2]) > 1e-4  # the body learns
