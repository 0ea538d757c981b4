"""MAML++'s stabilizers (Antoniou et al. 2019) as options of MAML."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def float64_mlp():
    return keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(6, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )


def sinusoid_batch(tasks=2):
    x, y = next(iter(tf_meta.data.sinusoid(shots=5, queries=5, meta_batch_size=tasks, seed=3)))
    return {k: v.numpy().astype("float64") for k, v in x.items()}, y.numpy().astype("float64")


def mse(y, predictions):
    return tf.reduce_mean(tf.square(y - predictions))


def test_per_step_learning_rates_are_used_step_by_step_and_learned(finite_differences):
    x, y = sinusoid_batch()
    learner = tf_meta.MAML(
        float64_mlp(),
        inner_learning_rate=0.1,
        inner_steps=2,
        per_step_learning_rates=True,
        eval_inner_steps=3,
        inner_loss="mse",
    )
    learner(x)
    assert [v.shape for v in learner.step_learning_rates_variables] == [(2,)] * 4
    for variable, rates in zip(
        learner.step_learning_rates_variables,
        ([0.1, 0.05], [0.2, 0.01], [0.3, 0.02], [0.4, 0.03]),
        strict=True,
    ):
        variable.assign(rates)
    support_x, support_y = x["support_x"][0], x["support_y"][0]
    weights = [w.numpy() for w in learner.model.trainable_variables]
    for step in range(3):  # the third (evaluation) step reuses the last rates
        copy = keras.models.clone_model(learner.model)
        copy.set_weights(weights)
        with tf.GradientTape() as tape:
            loss = mse(support_y, copy(support_x))
        gradients = tape.gradient(loss, copy.trainable_variables)
        column = min(step, 1)
        weights = [
            w - v.numpy()[column] * g.numpy()
            for w, v, g in zip(
                weights, learner.step_learning_rates_variables, gradients, strict=True
            )
        ]
    for ours, expected in zip(learner.adapt(support_x, support_y), weights, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-10)
    # The rates' meta-gradient against finite differences.
    with tf.GradientTape() as tape:
        loss = mse(y, learner(x, training=True))
    gradients = tape.gradient(loss, learner.step_learning_rates_variables)
    expected = finite_differences(
        lambda: mse(y, learner(x, training=True)), learner.step_learning_rates_variables
    )
    for gradient, difference in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(gradient, difference, rtol=1e-5)


def test_multi_step_loss_weights_anneal_to_the_last_step():
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_steps=4, multi_step_loss_steps=10)
    learner.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    learner.optimizer.build(learner.model.trainable_variables)
    np.testing.assert_allclose(learner.multi_step_loss_weights(), [0.25] * 4, rtol=1e-6)
    learner.optimizer.iterations.assign(5)
    np.testing.assert_allclose(learner.multi_step_loss_weights(), [0.125] * 3 + [0.625], rtol=1e-6)
    learner.optimizer.iterations.assign(100)
    np.testing.assert_allclose(
        learner.multi_step_loss_weights(), [0.0075] * 3 + [0.9775], rtol=1e-6
    )


def test_multi_step_loss_step_matches_a_hand_computed_weighted_gradient():
    x, y = sinusoid_batch()
    keras.utils.set_random_seed(0)
    learner = tf_meta.MAML(
        float64_mlp(), inner_learning_rate=0.1, inner_steps=3, multi_step_loss_steps=100
    )
    learner.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    learner(x)
    initial = [w.numpy() for w in learner.model.trainable_variables]
    # Independent computation: the query loss after 1, 2 and 3 steps, equally weighted at
    # the first meta-step.
    with tf.GradientTape() as tape:
        losses = [mse(y, learner.adapt_and_predict(x, steps=s, training=True)) for s in (1, 2, 3)]
        loss = tf.add_n(losses) / 3
    gradients = tape.gradient(loss, learner.model.trainable_variables)
    history = learner.fit(x, y, batch_size=2, epochs=1, verbose=0)
    for weight, before, gradient in zip(
        learner.model.trainable_variables, initial, gradients, strict=True
    ):
        # Keras computes the compiled (outer) loss in float32, hence the tolerance.
        np.testing.assert_allclose(
            weight.numpy(), before - 0.5 * gradient.numpy(), rtol=1e-6, atol=1e-9
        )
    # The reported loss is the objective: the weighted multi-step loss.
    np.testing.assert_allclose(history.history["loss"][0], loss.numpy(), rtol=1e-6)


def test_derivative_order_annealing_switches_from_first_to_second_order():
    x, y = sinusoid_batch()

    def learner_after(steps, **options):
        keras.utils.set_random_seed(0)
        learner = tf_meta.MAML(float64_mlp(), inner_learning_rate=0.1, inner_steps=2, **options)
        learner.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        for _ in range(steps):
            learner.fit(x, y, batch_size=2, epochs=1, verbose=0)
        return learner

    annealed = learner_after(1, first_order_steps=1)
    first_order = learner_after(1, first_order=True)
    for a, b in zip(annealed.get_weights(), first_order.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # The second meta-step is second order: equal to MAML started from the same weights.
    second_order = learner_after(0)
    second_order(x)
    second_order.set_weights(annealed.get_weights())
    annealed.fit(x, y, batch_size=2, epochs=1, verbose=0)
    second_order.fit(x, y, batch_size=2, epochs=1, verbose=0)
    first_order.fit(x, y, batch_size=2, epochs=1, verbose=0)
    for a, b in zip(annealed.get_weights(), second_order.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert (
        max(
            np.abs(a - b).max()
            for a, b in zip(annealed.get_weights(), first_order.get_weights(), strict=True)
        )
        > 1e-6
    )


def test_options_are_off_by_default_and_in_the_config():
    default = tf_meta.MAML(tf_meta.models.mlp()).get_config()
    assert (
        default["per_step_learning_rates"],
        default["multi_step_loss_steps"],
        default["first_order_steps"],
    ) == (False, 0, 0)
    learner = tf_meta.MAML(
        tf_meta.models.mlp(),
        inner_steps=2,
        per_step_learning_rates=True,
        multi_step_loss_steps=7,
        first_order_steps=3,
    )
    restored = tf_meta.MAML.from_config(learner.get_config())
    assert (
        restored.per_step_learning_rates,
        restored.multi_step_loss_steps,
        restored.first_order_steps,
    ) == (True, 7, 3)
    with pytest.raises(ValueError, match="multi_step_loss_steps"):
        tf_meta.MAML(tf_meta.models.mlp(), multi_step_loss_steps=-1)
    with pytest.raises(ValueError, match="first_order_steps"):
        tf_meta.MAML(tf_meta.models.mlp(), first_order_steps=1.5)
    with pytest.raises(ValueError, match="first_order_steps.*vectorize_tasks"):
        tf_meta.MAML(tf_meta.models.mlp(), first_order_steps=2, vectorize_tasks=True)


@pytest.mark.slow
def test_all_stabilizers_together_save_run_under_xla_and_learn(tmp_path):
    def make(jit_compile):
        keras.utils.set_random_seed(0)
        learner = tf_meta.MAML(
            tf_meta.models.mlp(),
            inner_learning_rate=0.01,
            inner_steps=2,
            per_step_learning_rates=True,
            multi_step_loss_steps=500,
            first_order_steps=300,
            eval_inner_steps=5,
        )
        learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=jit_compile)
        return learner

    pool = tf_meta.data.sinusoid(meta_batch_size=50, seed=1, num_tasks=100)
    stream = tf_meta.data.sinusoid(seed=0)
    learner, xla = make(False), make(True)
    before = learner.evaluate(pool, verbose=0)
    learner.fit(stream, steps_per_epoch=1000, verbose=0, shuffle=False)
    assert learner.evaluate(pool, verbose=0) < 0.5 * before
    xla.fit(stream.take(5), verbose=0, shuffle=False)
    graph = make(False)
    graph.fit(stream.take(5), verbose=0, shuffle=False)
    for a, b in zip(xla.get_weights(), graph.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    learner.save(tmp_path / "maml++.keras")
    restored = keras.saving.load_model(tmp_path / "maml++.keras")
    x, _ = next(iter(pool))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), learner.predict(x, verbose=0))
