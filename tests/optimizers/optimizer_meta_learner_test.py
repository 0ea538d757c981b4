import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta import optimizers
from tf_meta.optimizers.learned_rule import LearnedRule


def _linear_family(dtype="float32", examples=32, seed=0):
    """Linear regression tasks: quadratic inner losses."""

    def build():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, dtype=dtype)])

    def sample_task(generator):
        inputs = generator.normal(size=(examples, 2))
        return inputs, (inputs @ generator.normal(size=(2, 1)) + 0.5).astype(dtype)

    return optimizers.TaskFamily(build, sample_task, loss="mse", batch_size=8)


def _batch(family, model, problems, truncation, run_length, seed=0):
    stream = family.stream(model, problems, truncation, run_length, seed)
    return next(iter(stream))


def _learner(rule, model, **arguments):
    learner = optimizers.OptimizerMetaLearner(rule, model, "mse", **arguments)
    learner.compile(optimizer=keras.optimizers.SGD(1.0))
    return learner


def _step_gradient(learner, batch):
    """The meta-gradient of one step: SGD with rate 1 moves the rule by minus it."""
    before = [w.numpy() for w in learner.rule.trainable_weights]
    learner.train_on_batch(batch)
    after = [w.numpy() for w in learner.rule.trainable_weights]
    learner.rule.set_weights(before)
    return [b - a for a, b in zip(after, before, strict=True)]


def test_truncated_meta_gradient_matches_float64_finite_differences():
    family = _linear_family("float64")
    model = family.build_model()
    rule = optimizers.MLPRule(
        learning_rate=0.05,
        training_steps=6,
        hidden_units=(4,),
        output_scale=0.3,
        seed=1,
        dtype="float64",
    )
    learner = _learner(rule, model, meta_batch_size=2, truncation_length=3)
    batch = _batch(family, model, 2, 3, 6)
    gradient = _step_gradient(learner, batch)
    assert max(np.abs(g).max() for g in gradient) > 1e-4

    def meta_loss(weights):
        learner.rule.set_weights(weights)
        checked = learner._checked_batch(batch)
        return float(tf.reduce_mean(learner._map_problems(checked)["loss"]))

    theta = [w.numpy() for w in rule.trainable_weights]
    generator = np.random.default_rng(2)
    for _ in range(3):
        direction = [generator.normal(size=w.shape) for w in theta]
        step = 1e-6
        plus = meta_loss([w + step * d for w, d in zip(theta, direction, strict=True)])
        minus = meta_loss([w - step * d for w, d in zip(theta, direction, strict=True)])
        numeric = (plus - minus) / (2 * step)
        analytic = sum(float(np.sum(g * d)) for g, d in zip(gradient, direction, strict=True))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


def test_inner_run_is_the_keras_optimizer_run_of_the_same_rule():
    # What meta-training optimizes is what `compile` gets: over two truncations (the run's
    # state carried across meta-steps), the stored fast weights equal, to float32 rounding,
    # a Keras model trained by LearnedOptimizer(rule) from the same initialization on the
    # same minibatches.
    family = _linear_family()
    model = family.build_model()
    rule = optimizers.MLPRule(0.05, 12, hidden_units=(8,), output_scale=0.5, seed=3)
    learner = _learner(rule, model, meta_batch_size=1, truncation_length=6)
    learner.optimizer.learning_rate.assign(0.0)  # the rule stays as it is
    stream = iter(family.stream(model, 1, 6, 12, seed=0))
    batches = [next(stream) for _ in range(2)]
    for batch in batches:
        learner.train_on_batch(batch)
    reference = family.build_model()
    reference.set_weights([weights[0].numpy() for weights in batches[0]["initial_weights"]])
    reference.compile(optimizer=optimizers.LearnedOptimizer(rule), loss="mse")
    for batch in batches:
        for step in range(6):
            reference.train_on_batch(batch["inputs"][0, step], batch["targets"][0, step])
    stored = [variable.numpy()[0] for variable in learner._runs[0][0]]
    for received, expected in zip(stored, reference.get_weights(), strict=True):
        np.testing.assert_allclose(received, expected, rtol=1e-6, atol=1e-7)  # float32 order
    assert not np.allclose(stored[0], batches[0]["initial_weights"][0][0].numpy())


class LogRate(LearnedRule):
    """Gradient descent with a learned log step size: the smallest learned rule."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.log_rate = self.add_weight(shape=(), initializer="zeros", name="log_rate")
        self.built = True

    def initial_state(self, weight):
        return ()

    def direction(self, gradient, state, weight, step):
        return tf.cast(tf.exp(self.log_rate), weight.dtype) * gradient, state


def test_loss_floor_enters_the_log_of_the_meta_objective():
    # One step per truncation: each problem's meta-loss is log(L + floor) and its share of
    # the meta-gradient L' / (L + floor), so the floor scales the share by L / (L + floor).
    family = _linear_family("float64")
    model = family.build_model()
    batch = _batch(family, model, 2, 1, 4)
    results = {}
    for floor in (0.0, 0.5):
        rule = LogRate(dtype="float64")
        learner = _learner(rule, model, meta_batch_size=2, truncation_length=1, loss_floor=floor)
        problems = learner._map_problems(learner._checked_batch(batch))
        results[floor] = {key: np.asarray(problems[key]) for key in ("loss", "final")}
        results[floor]["share"] = np.asarray(problems["gradients"][0])
    plain, floored = results[0.0], results[0.5]
    final = plain["final"]
    np.testing.assert_allclose(floored["final"], final)
    np.testing.assert_allclose(np.exp(plain["loss"]), final, rtol=1e-10)
    np.testing.assert_allclose(np.exp(floored["loss"]), final + 0.5, rtol=1e-10)
    assert np.all(np.abs(plain["share"]) > 1e-4)
    np.testing.assert_allclose(floored["share"], plain["share"] * final / (final + 0.5), rtol=1e-8)
    with pytest.raises(ValueError, match="`loss_floor`"):
        optimizers.OptimizerMetaLearner(LogRate(), family.build_model(), loss_floor=-1.0)


def test_pes_is_unbiased_over_two_truncations_of_a_run():
    # One fixed quadratic task (every minibatch is the whole set), 8 problems a meta-step.
    family = _linear_family(examples=8)
    model = family.build_model()
    problems = 8
    batch = _batch(family, model, problems, 4, 4)
    same = {key: batch[key] for key in ("inputs", "targets")}
    same = {key: tf.repeat(value[:1], problems, axis=0) for key, value in same.items()}
    initial = tuple(tf.repeat(value[:1], problems, axis=0) for value in batch["initial_weights"])
    slots = tf.range(problems, dtype=tf.int32)

    def batch_for(truncation, reset):
        return {
            "inputs": same["inputs"][:, : truncation + 1],
            "targets": same["targets"][:, : truncation + 1],
            "reset": tf.fill([problems], reset),
            "slot": slots,
            "initial_weights": initial,
        }

    exact_learner = _learner(
        LogRate(learning_rate=0.1, training_steps=4),
        model,
        meta_batch_size=problems,
        truncation_length=4,
    )
    # The whole run in one truncation: the exact gradient of the mean log loss over 4 steps.
    # Two truncations of 2 score the same 4 losses, in two means: twice the gradient.
    exact = 2 * _step_gradient(exact_learner, batch_for(4, True))[0]
    rule = LogRate(learning_rate=0.1, training_steps=4)
    learner = _learner(
        rule,
        model,
        meta_batch_size=problems,
        truncation_length=2,
        estimator="pes",
        perturbation_std=0.05,
    )
    estimates = [
        _step_gradient(learner, batch_for(2, True))[0]
        + _step_gradient(learner, batch_for(2, False))[0]
        for _ in range(40)
    ]
    mean, error = np.mean(estimates), np.std(estimates, ddof=1) / np.sqrt(len(estimates))
    assert error < 0.25 * abs(exact)  # the test can tell a biased estimator
    assert abs(mean - exact) < 3 * error


def test_mirrored_meta_step_equals_the_single_device_step(mirrored_strategy):
    family = optimizers.sinusoid_family(hidden_units=(8,), batch_size=5)
    model = family.build_model()
    batch = _batch(family, model, 2, 3, 6)

    def run(scope):
        with scope:
            network = family.build_model()
            network.set_weights(model.get_weights())
            rule = optimizers.MLPRule(0.01, 6, hidden_units=(8,), output_scale=0.3, seed=3)
            learner = optimizers.OptimizerMetaLearner(
                rule, network, "mse", meta_batch_size=2, truncation_length=3
            )
            learner.compile(optimizer=keras.optimizers.SGD(0.5))
        # fit splits the meta-batch over the replicas (train_on_batch would not).
        learner.fit(tf.data.Dataset.from_tensors(batch), verbose=0)
        return [w.numpy() for w in learner.weights]

    single = run(tf.distribute.get_strategy().scope())
    mirrored = run(mirrored_strategy.scope())
    for a, b in zip(single, mirrored, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_keras_file_round_trip_continues_identically(tmp_path):
    family = optimizers.sinusoid_family(hidden_units=(8,), batch_size=5)
    model = family.build_model()
    rule = optimizers.MLPRule(0.01, 6, hidden_units=(8,), seed=3)
    learner = optimizers.OptimizerMetaLearner(rule, model, "mse", 2, 3)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    stream = iter(family.stream(model, 2, 3, 6))
    learner.train_on_batch(next(stream))
    path = str(tmp_path / "meta.keras")
    learner.save(path)
    restored = keras.saving.load_model(path)
    batch = next(stream)
    learner.train_on_batch(batch)
    restored.train_on_batch(batch)
    assert len(restored.weights) == len(learner.weights)
    for a, b in zip(learner.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_nan_inner_loss_stops_the_step_and_changes_nothing():
    family = _linear_family()
    model = family.build_model()
    learner = _learner(
        optimizers.MLPRule(0.01, 6, hidden_units=(4,)),
        model,
        meta_batch_size=2,
        truncation_length=3,
    )
    batch = dict(_batch(family, model, 2, 3, 6))
    learner.train_on_batch(batch)
    before = [w.numpy() for w in learner.weights]
    targets = batch["targets"].numpy()
    targets[1, 0, 0] = np.nan
    batch["targets"] = targets
    with pytest.raises(tf.errors.InvalidArgumentError, match="Meta-step.*not finite"):
        learner.train_on_batch(batch)
    for a, b in zip(before, learner.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("estimator", ["truncated_backprop", "pes"])
def test_a_diverged_run_adds_nothing_and_restarts(estimator):
    family = _linear_family()
    model = family.build_model()
    rule = optimizers.MLPRule(0.01, 6, hidden_units=(4,))
    learner = _learner(rule, model, meta_batch_size=2, truncation_length=3, estimator=estimator)
    batch = dict(_batch(family, model, 2, 3, 6))
    targets = batch["targets"].numpy()
    targets[1, 1:] = 1e30  # problem 1's loss overflows after its first step
    batch["targets"] = targets
    before = [w.numpy() for w in rule.weights]
    logs = learner.train_on_batch(batch, return_dict=True)
    assert logs["diverged_runs"] == 1.0
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, rule.weights, strict=True))
    assert all(np.all(np.isfinite(w.numpy())) for w in rule.weights)
    steps = learner._runs[0][2].numpy()
    assert steps[0] == 3 and steps[1] == -1  # problem 1 restarts at its next truncation
    batch["reset"] = tf.zeros([2], tf.bool)
    batch["targets"] = _batch(family, model, 2, 3, 6)["targets"]
    logs = learner.train_on_batch(batch, return_dict=True)
    np.testing.assert_array_equal(learner._runs[0][2].numpy(), [6, 3])


def test_bad_input_raises_clear_errors():
    family = _linear_family()
    model = family.build_model()
    rule = optimizers.MLPRule(0.01, 6, hidden_units=(4,))
    with pytest.raises(ValueError, match="`truncation_length`"):
        optimizers.OptimizerMetaLearner(rule, model, truncation_length=0)
    with pytest.raises(ValueError, match="`rule` must be"):
        optimizers.OptimizerMetaLearner(tf_meta.rules.GradientDescent(0.1), model)
    with pytest.raises(ValueError, match="`estimator`"):
        optimizers.OptimizerMetaLearner(rule, model, estimator="adam")
    with pytest.raises(ValueError, match="needs a stochastic rule"):
        optimizers.OptimizerMetaLearner(rule, model, estimator="reinforce")
    frozen = family.build_model()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        optimizers.OptimizerMetaLearner(rule, frozen)
    with pytest.raises(ValueError, match="multiple of"):
        family.stream(model, 2, 3, 7)
    # A network whose output does not depend on its weights: no gradient to optimize.
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(1)
    dense(inputs)
    constant = keras.Model(inputs, keras.layers.Lambda(lambda x: 0.0 * x[:, :1])(inputs))
    constant.layers[-1]._tracker.unlock()
    constant.layers[-1].dense = dense
    learner = _learner(rule, constant, meta_batch_size=2, truncation_length=3)
    batch = _batch(family, constant, 2, 3, 6)
    with pytest.raises(ValueError, match="yields no gradient"):
        learner.train_on_batch(batch)
    learner = _learner(rule, model, meta_batch_size=4, truncation_length=3)
    with pytest.raises(ValueError, match="meta_batch_size=4"):
        learner.train_on_batch(_batch(family, model, 2, 3, 6))


@pytest.mark.parametrize("estimator", ["truncated_backprop", "reinforce"])
def test_controller_learns_to_raise_a_too_small_learning_rate(estimator):
    family = _linear_family()
    model = family.build_model()
    rule = optimizers.ControllerRule(learning_rate=1e-3, training_steps=10, seed=0)
    learner = optimizers.OptimizerMetaLearner(
        rule,
        model,
        "mse",
        meta_batch_size=8,
        truncation_length=5,
        estimator=estimator,
        perturbation_std=0.5,
    )
    learner.compile(optimizer=keras.optimizers.Adam(0.05))
    learner.fit(family.stream(model, 8, 5, 10), steps_per_epoch=30, verbose=0)
    features = tf.constant([[0.0, 0.0, 0.5, 0.0]])
    log_multiplier = float(rule.output_layer(rule.hidden(features))[0, 0])
    assert log_multiplier > 0.5  # the controller now multiplies the base rate by > 1.6
