import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def sinusoid_batch(tasks=3, shots=6):
    x, y = next(iter(tf_meta.data.sinusoid(shots=shots, queries=4, meta_batch_size=tasks, seed=5)))
    return {k: v.numpy() for k, v in x.items()}, y.numpy()


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_outer_sgd_step_of_one_lands_on_the_mean_adapted_weights(inner_optimizer):
    x, y = sinusoid_batch()
    # The task loop, as `adapt` runs: vectorized, Adam's division turns rounding noise into
    # differences of 2e-6 (the vectorized step is checked in speed_options_test.py).
    learner = tf_meta.Reptile(
        tf_meta.models.mlp(),
        inner_learning_rate=0.02,
        inner_steps=4,
        inner_optimizer=inner_optimizer,
        vectorize_tasks=False,
    )
    learner.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    adapted = [learner.adapt(x["support_x"][task], x["support_y"][task]) for task in range(3)]
    expected = [np.mean([a[i] for a in adapted], axis=0) for i in range(len(adapted[0]))]
    assert (
        max(np.abs(e - w).max() for e, w in zip(expected, learner.model.get_weights(), strict=True))
        > 1e-3
    )
    learner.fit(x, y, batch_size=3, epochs=1, verbose=0)
    for weight, mean in zip(learner.model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(weight, mean, rtol=1e-5, atol=1e-6)


def test_partial_outer_step_interpolates():
    x, y = sinusoid_batch()
    learner = tf_meta.Reptile(tf_meta.models.mlp(), inner_learning_rate=0.02, inner_optimizer="sgd")
    learner.compile(optimizer=keras.optimizers.SGD(0.25), loss="mse")
    initial = learner.model.get_weights()
    adapted = [learner.adapt(x["support_x"][t], x["support_y"][t]) for t in range(3)]
    learner.fit(x, y, batch_size=3, epochs=1, verbose=0)
    for index, (before, after) in enumerate(zip(initial, learner.model.get_weights(), strict=True)):
        mean = np.mean([a[index] for a in adapted], axis=0)
        np.testing.assert_allclose(after, before + 0.25 * (mean - before), rtol=1e-5, atol=1e-6)


def test_inner_adam_matches_keras_adam_with_zero_beta_1():
    x, _ = sinusoid_batch()
    learner = tf_meta.Reptile(
        tf_meta.models.mlp(), inner_learning_rate=0.01, inner_steps=5, inner_loss="mse"
    )
    adapted = learner.adapt(x["support_x"][0], x["support_y"][0])
    # Independent computation: Keras's own Adam on a copy of the network's variables.
    copy = keras.models.clone_model(learner.model)
    copy.set_weights(learner.model.get_weights())
    optimizer = keras.optimizers.Adam(0.01, beta_1=0.0, beta_2=0.999, epsilon=1e-7)
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = keras.losses.mean_squared_error(x["support_y"][0], copy(x["support_x"][0]))
            loss = tf.reduce_mean(loss)
        optimizer.apply_gradients(
            zip(
                tape.gradient(loss, copy.trainable_variables), copy.trainable_variables, strict=True
            )
        )
    for ours, keras_adam in zip(adapted, copy.get_weights(), strict=True):
        np.testing.assert_allclose(ours, keras_adam, rtol=1e-5, atol=1e-6)


def test_minibatches_partition_the_support_set():
    # Example i is the one-hot vector e_i with target 1. From zero weights, an SGD step on a
    # minibatch B of 3 examples raises exactly the entries of B, each by 0.1 * 2 / 3. Two
    # steps leave all six entries at that value only if the two minibatches are disjoint and
    # cover the support set.
    support_x, support_y = np.eye(6, dtype="float32"), np.ones((6, 1), "float32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    learner = tf_meta.Reptile(
        model,
        inner_learning_rate=0.1,
        inner_steps=2,
        inner_optimizer="sgd",
        inner_batch_size=3,
        inner_loss="mse",
    )
    for _ in range(5):  # different shuffles, same property
        (kernel,) = learner.adapt(support_x, support_y)
        np.testing.assert_allclose(kernel[:, 0], np.full(6, 0.2 / 3), rtol=1e-6)
        (first_step,) = learner.adapt(support_x, support_y, steps=1)
        assert np.count_nonzero(first_step) == 3
    with pytest.raises(ValueError, match="`inner_batch_size`=7 is larger than the support set"):
        tf_meta.Reptile(model, inner_batch_size=7, inner_loss="mse").adapt(support_x, support_y)


def test_non_transductive_prediction_puts_each_query_beside_the_support_set():
    x, _ = sinusoid_batch(tasks=1)
    network = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    learner = tf_meta.Reptile(network, inner_steps=0, transductive=False, inner_loss="mse")
    predictions = learner.predict(x, verbose=0)[0]
    for index, query in enumerate(x["query_x"][0]):
        batch = np.concatenate([x["support_x"][0], query[None]])
        np.testing.assert_allclose(
            predictions[index], network(batch, training=True)[-1], rtol=1e-5, atol=1e-6
        )
    transductive = tf_meta.Reptile(network, inner_steps=0, inner_loss="mse").predict(x, verbose=0)[
        0
    ]
    assert np.abs(transductive - predictions).max() > 1e-3


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"inner_batch_size": 0}, "inner_batch_size"),
        ({"inner_optimizer": "rmsprop"}, "inner_optimizer"),
        ({"inner_learning_rate": 0}, "inner_learning_rate"),
        ({"inner_steps": -1}, "inner_steps"),
    ],
)
def test_bad_hyperparameters_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        tf_meta.Reptile(tf_meta.models.mlp(), **arguments)


def test_short_fit_on_sinusoids_lowers_post_adaptation_mse():
    learner = tf_meta.Reptile(
        tf_meta.models.mlp(),
        inner_learning_rate=0.02,
        inner_steps=5,
        inner_optimizer="sgd",
        eval_inner_steps=10,
    )
    schedule = keras.optimizers.schedules.PolynomialDecay(1.0, 1500, end_learning_rate=0.0)
    learner.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=50, seed=1, num_tasks=100)
    before = learner.evaluate(pool, verbose=0)
    learner.fit(tf_meta.data.sinusoid(seed=0), steps_per_epoch=1500, verbose=0, shuffle=False)
    after = learner.evaluate(pool, verbose=0)
    assert after < 0.5 * before, (before, after)
