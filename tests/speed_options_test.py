"""Checks the speed options (vectorized tasks, gradient checkpointing, XLA) keep the result."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta

WAYS = 3


def network():
    """A convolutional network with batch normalization: conv filter gradients, BN statistics."""
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(WAYS),
        ]
    )


LEARNERS = {
    "MAML": lambda **options: tf_meta.MAML(
        network(), inner_learning_rate=0.3, inner_steps=2, **options
    ),
    "MAML++": lambda **options: tf_meta.MAML(
        network(),
        inner_learning_rate=0.3,
        inner_steps=3,
        per_step_learning_rates=True,
        multi_step_loss_steps=10,
        **options,
    ),
    "MetaSGD": lambda **options: tf_meta.MetaSGD(network(), inner_learning_rate=0.3, **options),
    "ANIL": lambda **options: tf_meta.ANIL(
        network(), inner_learning_rate=0.3, inner_steps=2, **options
    ),
    "PrototypicalNetwork": lambda **options: tf_meta.PrototypicalNetwork(network(), **options),
    # Inner SGD: Adam would turn the rounding noise of the convolution's bias gradient
    # (zero in exact arithmetic, since batch normalization follows) into full steps.
    "Reptile": lambda **options: tf_meta.Reptile(
        network(), inner_learning_rate=0.1, inner_steps=3, inner_optimizer="sgd", **options
    ),
}
OPTIONS = {
    "vectorize_tasks": {"vectorize_tasks": True},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "both": {"vectorize_tasks": True, "gradient_checkpointing": True},
}


def episode(tasks=4):
    rng = np.random.default_rng(0)
    x = {
        "support_x": rng.normal(size=(tasks, WAYS * 2, 6, 6, 1)).astype("float32"),
        "support_y": np.tile(np.repeat(np.arange(WAYS), 2), (tasks, 1)).astype("int32"),
        "query_x": rng.normal(size=(tasks, WAYS * 3, 6, 6, 1)).astype("float32"),
    }
    return x, np.tile(np.repeat(np.arange(WAYS), 3), (tasks, 1)).astype("int32")


def meta_update(name, jit_compile=False, sample_weight=None, **options):
    """The change of every learner variable after one meta-step with SGD at rate 1."""
    keras.utils.set_random_seed(0)
    learner = (LEARNERS[name] if isinstance(name, str) else name)(**options)
    learner.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    x, y = episode()
    learner(x)
    before = [v.numpy() for v in learner.trainable_variables]
    learner.train_on_batch(x, y, sample_weight=sample_weight)
    return [v.numpy() - b for v, b in zip(learner.trainable_variables, before, strict=True)]


def assert_same_update(actual, expected):
    scale = max(float(np.abs(e).max()) for e in expected)
    assert scale > 0
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * scale)


# Meta-SGD's and ANIL's cases run under `pytest -m slow`.
@pytest.mark.ci_params("name", "MAML", "MAML++", "Reptile", "PrototypicalNetwork")
@pytest.mark.parametrize(
    "name,option",
    # First-order MAML and ANIL take MAML's path through the options.
    [
        (name, option)
        for name in ("MAML", "MAML++", "MetaSGD")
        for option in ("vectorize_tasks", "gradient_checkpointing")
    ]
    + [
        ("Reptile", "vectorize_tasks"),
        ("PrototypicalNetwork", "vectorize_tasks"),
        ("MAML++", "both"),
        ("ANIL", "both"),
    ],
)
def test_option_gives_the_plain_meta_gradient(name, option):
    assert_same_update(meta_update(name, **OPTIONS[option]), meta_update(name))


@pytest.mark.ci_params("name", "MAML")  # MAML++: `pytest -m slow`
@pytest.mark.parametrize("name", ["MAML", "MAML++"])
def test_task_by_task_meta_gradient_weighs_queries_like_the_batch_loss(name):
    """The default step differentiates each task inside the task loop; with query weights
    it must still give the gradient of the whole batch's weighted loss, which the
    vectorized step takes from outside its loop."""
    weights = np.random.default_rng(1).uniform(0.0, 2.0, size=(4, WAYS * 3)).astype("float32")
    plain = meta_update(name, sample_weight=weights)
    assert_same_update(plain, meta_update(name, sample_weight=weights, vectorize_tasks=True))
    unweighted = meta_update(name)
    assert not np.allclose(plain[0], unweighted[0], rtol=1e-3)


def test_summed_loss_gives_the_gradient_of_the_sum():
    """With `reduction="sum"` the batch's loss is not the mean of its tasks' losses: the step
    must still give the gradient of the summed loss: 36 queries in all times the mean's."""

    def update(reduction):
        keras.utils.set_random_seed(0)
        # The inner loss stays the same: only the outer loss's reduction changes.
        learner = LEARNERS["MAML"](
            inner_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        learner.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
        )
        x, y = episode()
        learner(x)
        before = [v.numpy() for v in learner.trainable_variables]
        learner.train_on_batch(x, y)
        return [v.numpy() - b for v, b in zip(learner.trainable_variables, before, strict=True)]

    summed, averaged = update("sum"), update("sum_over_batch_size")
    assert_same_update(summed, [value * 4 * WAYS * 3 for value in averaged])


@pytest.mark.ci_params("name", "MAML")  # MAML++: `pytest -m slow`
@pytest.mark.parametrize("name", ["MAML", "MAML++"])
def test_gradient_checkpointing_under_xla_gives_the_plain_meta_gradient(name):
    assert_same_update(
        meta_update(name, jit_compile=True, gradient_checkpointing=True), meta_update(name)
    )


def test_vectorized_tasks_under_xla_give_the_plain_meta_gradient():
    """Without convolutions: XLA refuses the loop that vectorization falls back to for the
    gradient of a convolution's filters."""

    def dense_maml(**options):
        network = keras.Sequential(
            [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(WAYS)]
        )
        return tf_meta.MAML(network, inner_learning_rate=0.3, inner_steps=2, **options)

    assert_same_update(
        meta_update(dense_maml, jit_compile=True, vectorize_tasks=True),
        meta_update(dense_maml, vectorize_tasks=False),
    )


def _counting_vectorized_map(monkeypatch):
    """Counts the calls of `tf.vectorized_map` (one per traced task map)."""
    calls = []
    original = tf.vectorized_map

    def counting(*arguments, **keywords):
        calls.append(1)
        return original(*arguments, **keywords)

    monkeypatch.setattr(tf, "vectorized_map", counting)
    return calls


DENSE = [keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
CONVOLUTION = [keras.layers.Reshape((1, 1, 1)), keras.layers.Conv2D(1, 1), keras.layers.Flatten()]


def _fit_sinusoid(learner, caplog, stream=None, **compile_options):
    """Fits `learner` for two sinusoid batches; returns the log lines that name a task loop."""
    learner.compile(optimizer="sgd", **{"loss": "mse", **compile_options})
    stream = stream or tf_meta.data.sinusoid(meta_batch_size=2, seed=0)
    with caplog.at_level("INFO", logger="tf_meta"):
        learner.fit(stream, steps_per_epoch=2, verbose=0)
    return [record.message for record in caplog.records if "run in a loop" in record.message]


@pytest.mark.parametrize(
    "layers, options, compile_options, reason",
    [
        (DENSE, {}, {}, None),
        (DENSE, {}, {"loss": keras.losses.MeanSquaredError(reduction="sum")}, None),
        (DENSE, {}, {"jit_compile": True}, "jit_compile"),
        (CONVOLUTION, {}, {}, "Conv2D layer"),
        (DENSE, {"first_order_steps": 1}, {}, "first_order_steps"),
    ],
    ids=["dense", "dense-summed-loss", "dense-xla", "convolution", "first-order-steps"],
)
def test_auto_vectorizes_dense_networks_only(
    monkeypatch, caplog, layers, options, compile_options, reason
):
    calls = _counting_vectorized_map(monkeypatch)
    network = keras.Sequential(
        [keras.Input((1,)), *[layer.__class__.from_config(layer.get_config()) for layer in layers]]
    )
    learner = tf_meta.MAML(network, inner_learning_rate=0.01, **options)
    assert learner.vectorize_tasks == "auto"
    logged = _fit_sinusoid(learner, caplog, **compile_options)
    if reason is None:
        assert calls and not logged
    else:  # one line, once, naming the reason
        assert not calls and len(logged) == 1 and reason in logged[0], logged


def test_unknown_example_axes_run_the_task_loop(monkeypatch, caplog):
    """Vectorized, an empty example axis would fail inside the map before the check that
    names it runs (front_door_test.py), so a step traced for unknown axes loops."""
    calls = _counting_vectorized_map(monkeypatch)
    stream = tf_meta.data.sinusoid(meta_batch_size=2, seed=0)
    relaxed = tf.data.Dataset.from_generator(
        lambda: stream.take(2).as_numpy_iterator(),
        output_signature=tf.nest.map_structure(
            lambda spec: tf.TensorSpec([None, None, *spec.shape[2:]], spec.dtype),
            stream.element_spec,
        ),
    ).repeat()
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01, vectorize_tasks=True)
    logged = _fit_sinusoid(learner, caplog, stream=relaxed)
    assert not calls and len(logged) == 1 and "example axes unknown" in logged[0], logged


def test_auto_gives_the_loops_meta_gradient_on_a_dense_network():
    def dense_maml(**options):
        network = keras.Sequential(
            [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(WAYS)]
        )
        return tf_meta.MAML(network, inner_learning_rate=0.3, inner_steps=2, **options)

    assert_same_update(meta_update(dense_maml), meta_update(dense_maml, vectorize_tasks=False))
    with pytest.raises(ValueError, match="`vectorize_tasks`"):
        dense_maml(vectorize_tasks="yes")


class _CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append((batch, float(logs["loss"])))


def test_several_meta_steps_in_one_xla_program_train_like_one_step_at_a_time():
    """On an endless stream under XLA, `steps_per_execution` meta-steps run in one compiled
    program (`MetaLearner.fit`); the weights, the step count, the logs and the callbacks'
    calls are those of Keras's loop, which launches the compiled step once per meta-step
    (on a finite dataset, which this learner leaves to Keras)."""

    def fit(stream, vectorize_tasks):
        keras.utils.set_random_seed(0)
        learner = tf_meta.MAML(
            tf_meta.models.mlp(), inner_learning_rate=0.01, vectorize_tasks=vectorize_tasks
        )
        learner.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss="mse",
            jit_compile=True,
            steps_per_execution=4,
        )
        counter = _CountBatches()
        history = learner.fit(
            stream, steps_per_epoch=8, epochs=2, verbose=0, callbacks=[counter]
        ).history
        return learner, history, counter.ends

    batches = tf_meta.data.sinusoid(meta_batch_size=4, seed=0).take(16).cache()
    for vectorize_tasks in (False, True):
        stacked, stacked_history, stacked_ends = fit(batches.repeat(), vectorize_tasks)
        assert stacked._stacked_steps
        looped, looped_history, looped_ends = fit(batches, vectorize_tasks)  # finite
        assert not looped._stacked_steps
        assert int(stacked.optimizer.iterations) == int(looped.optimizer.iterations) == 16
        assert [end for end, _ in stacked_ends] == [end for end, _ in looped_ends] == [3, 7] * 2
        np.testing.assert_allclose(
            [loss for _, loss in stacked_ends], [loss for _, loss in looped_ends], rtol=1e-5
        )
        np.testing.assert_allclose(stacked_history["loss"], looped_history["loss"], rtol=1e-5)
        assert_same_update(
            [v.numpy() for v in stacked.trainable_variables],
            [v.numpy() for v in looped.trainable_variables],
        )


@pytest.mark.ci_params("steps_per_execution", 4)  # one step per execution: `-m slow`
@pytest.mark.parametrize("steps_per_execution", [1, 4])
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("support_x", np.nan, "'support_x' contains NaN"),
        ("query_y", WAYS, "query_y has a class label >= 3"),
    ],
)
def test_under_xla_a_bad_batch_fails_its_step_and_changes_nothing(
    steps_per_execution, key, value, message
):
    """XLA drops run-time checks (`check_numerics`, `tf.debugging` asserts): compiled, the
    step took a NaN into the weights, until the checks ran before the compiled program."""
    keras.utils.set_random_seed(0)
    learner = LEARNERS["MAML"]()
    learner.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
        steps_per_execution=steps_per_execution,
    )
    x, y = episode()
    good = tf.data.Dataset.from_tensors((x, y)).repeat()
    learner.fit(good, steps_per_epoch=steps_per_execution, verbose=0)
    before = [v.numpy() for v in learner.variables + learner.optimizer.variables]
    bad_x, bad_y = dict(x), y.copy()
    if key == "query_y":
        bad_y[0, 0] = value
    else:
        bad_x[key] = x[key].copy()
        bad_x[key][0, 0, 0] = value
    bad = tf.data.Dataset.from_tensors((bad_x, bad_y))
    stream = good.take(steps_per_execution - 1).concatenate(bad).concatenate(good)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        learner.fit(stream, steps_per_epoch=steps_per_execution, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        learner.evaluate(bad, verbose=0)
    after = [v.numpy() for v in learner.variables + learner.optimizer.variables]
    for expected, actual in zip(before, after, strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_tf_recompute_grad_still_stops_the_inner_tape():
    """`tf_meta.checkpointing.recompute` exists because `tf.recompute_grad` runs the forward
    pass with every tape stopped, so an inner gradient inside it is None. When this test
    fails, TensorFlow has changed and `tf.recompute_grad` may replace it."""

    def inner_step(weight, seen):
        with tf.GradientTape() as tape:
            tape.watch(weight)
            loss = tf.reduce_sum(tf.sin(weight) * weight**2)
        gradient = tape.gradient(loss, weight)
        seen.append(gradient)
        return weight if gradient is None else weight - gradient

    weight = tf.constant([1.5, -0.7])
    in_tensorflow, in_tf_meta = [], []
    tf.recompute_grad(lambda w: inner_step(w, in_tensorflow))(weight)
    tf_meta.checkpointing.recompute(lambda w: inner_step(w, in_tf_meta))(weight)
    assert in_tensorflow == [None]
    assert in_tf_meta[0] is not None


def test_recompute_gives_the_second_order_gradient_of_a_variable_and_an_argument():
    rate = tf.Variable(0.3)

    def adapted_loss(weight):
        with tf.GradientTape() as tape:
            tape.watch(weight)
            loss = tf.reduce_sum(tf.sin(weight) * weight**2)
        adapted = weight - rate * tape.gradient(loss, weight)
        return tf.reduce_sum(tf.cos(adapted) * adapted)

    weight = tf.constant([1.5, -0.7])

    @tf.function
    def gradients(function):
        with tf.GradientTape() as tape:
            tape.watch(weight)
            value = function(weight)
        return tape.gradient(value, [weight, rate])

    plain = gradients(adapted_loss)
    recomputed = gradients(tf_meta.checkpointing.recompute(adapted_loss))
    # An independent value: the analytic derivative, by hand, of the same function.
    w, r = np.array([1.5, -0.7]), 0.3
    g = np.cos(w) * w**2 + 2 * w * np.sin(w)
    h = -np.sin(w) * w**2 + 4 * w * np.cos(w) + 2 * np.sin(w)
    a = w - r * g
    outer = -np.sin(a) * a + np.cos(a)
    np.testing.assert_allclose(plain[0], outer * (1 - r * h), rtol=1e-5)
    np.testing.assert_allclose(plain[1], np.sum(outer * -g), rtol=1e-5)
    for p, q in zip(plain, recomputed, strict=True):
        np.testing.assert_allclose(q, p, rtol=1e-6)


def test_options_survive_saving(tmp_path):
    learner = LEARNERS["MAML"](vectorize_tasks=True, gradient_checkpointing=True)
    learner.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, _ = episode()
    learner(x)
    learner.save(tmp_path / "learner.keras")
    loaded = keras.saving.load_model(tmp_path / "learner.keras")
    assert loaded.vectorize_tasks and loaded.gradient_checkpointing
    np.testing.assert_allclose(loaded.predict(x, verbose=0), learner.predict(x, verbose=0), 1e-5)


def test_prototypical_network_with_vectorized_tasks_normalizes_each_episode_by_itself():
    """Vectorized, in graph mode and under XLA: the loop's update and moving statistics."""

    def step(jit_compile=False, **options):
        keras.utils.set_random_seed(0)
        learner = LEARNERS["PrototypicalNetwork"](**options)
        learner.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        learner.train_on_batch(*episode())
        return [v.numpy() for v in learner.model.variables]

    loop = step()
    for options in ({"vectorize_tasks": True}, {"vectorize_tasks": True, "jit_compile": True}):
        for actual, expected in zip(step(**options), loop, strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        LEARNERS["PrototypicalNetwork"](gradient_checkpointing=True)


def test_reptile_refuses_gradient_checkpointing():
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        LEARNERS["Reptile"](gradient_checkpointing=True)


def test_options_under_mirrored_strategy_train_like_one_device(mirrored_strategy):
    """Each replica's share of the meta-batch has an unknown task count at trace time."""

    def train(strategy, **options):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01, **options)
            learner.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        learner.fit(tf_meta.data.sinusoid(meta_batch_size=6), steps_per_epoch=3, verbose=0)
        return [variable.numpy() for variable in learner.trainable_variables]

    one_device = train(tf.distribute.get_strategy())
    both = train(mirrored_strategy, vectorize_tasks=True, gradient_checkpointing=True)
    assert_same_update(both, one_device)
