import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_meta import optimizers
from tf_meta.optimizers.mlp_rule import FEATURES, OUTPUTS


def _pass_through(rule, feature, output, gain=1.0):
    """Sets `rule`'s MLP to output `gain * feature` on `output` and zero elsewhere."""
    layers = [*rule.hidden, rule.output_layer]
    weights = []
    for index, layer in enumerate(layers):
        inputs, units = layer.kernel.shape
        kernel = np.zeros((inputs, units))
        if layer is rule.output_layer:
            kernel[0, OUTPUTS.index(output)] = gain
            kernel[1, OUTPUTS.index(output)] = -gain
        elif index == 0:
            kernel[FEATURES.index(feature), 0] = 1.0
            kernel[FEATURES.index(feature), 1] = -1.0
        else:
            kernel[0, 0] = kernel[1, 1] = 1.0
        weights += [kernel, np.zeros(units)]
    rule.set_weights(weights)
    return rule


def _model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )


def _data():
    generator = np.random.default_rng(0)
    inputs = generator.normal(size=(64, 3)).astype("float32")
    return inputs, np.sin(inputs.sum(axis=1, keepdims=True)).astype("float32")


def _train(optimizer, steps=6, **compile_arguments):
    model = _model()
    model.compile(optimizer=optimizer, loss="mse", **compile_arguments)
    model.fit(*_data(), batch_size=16, epochs=steps // 4, shuffle=False, verbose=0)
    return [w.numpy() for w in model.trainable_weights]


@pytest.mark.parametrize(
    "feature, gain, reference",
    [
        ("gradient", 1.0, lambda: keras.optimizers.SGD(0.05)),
        ("momentum_0.9", 10.0, lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
    ],
    ids=["sgd", "momentum"],
)
def test_hand_set_rule_is_sgd_and_sgd_with_momentum(feature, gain, reference):
    # The `scaled` output is in the gradient's units: passing the gradient through is SGD,
    # passing the 0.9 momentum (an average, so times 1 / (1 - 0.9)) is SGD with momentum.
    rule = _pass_through(optimizers.MLPRule(learning_rate=0.05), feature, "scaled", gain)
    learned = _train(optimizers.LearnedOptimizer(rule), steps=8)
    expected = _train(reference(), steps=8)
    assert not np.allclose(expected[0], _model().trainable_weights[0].numpy())  # it trained
    for a, b in zip(learned, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_untrained_rule_is_adam_without_first_moment_correction():
    rule = optimizers.MLPRule(learning_rate=0.01, output_scale=0.0)
    weight = tf.constant([[0.5, -1.0], [2.0, 0.1]])
    state = rule.initial_state(weight)
    gradient = tf.constant([[0.3, -0.2], [1e-3, 4.0]])
    direction, _ = rule.direction(gradient, state, weight, 0)
    # Step 1 of Adam(beta_1 0.9, beta_2 0.999) without m's correction: 0.1 g / |g|.
    np.testing.assert_allclose(direction, 0.1 * np.sign(gradient), rtol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.LearnedOptimizer(optimizers.MLPRule(0.01, 20, seed=4)),
        lambda: optimizers.LSTMOptimizer(optimizers.LSTMRule(0.01, 20, seed=4)),
        lambda: optimizers.HyperparameterController(optimizers.ControllerRule(0.05, 20, seed=4)),
    ],
    ids=["mlp", "lstm", "controller"],
)
def test_config_round_trip_gives_identical_updates(make):
    optimizer = make()
    clone = type(optimizer).from_config(optimizer.get_config())
    for a, b in zip(optimizer.rule.get_weights(), clone.rule.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_train(optimizer), _train(clone), strict=True):
        np.testing.assert_array_equal(a, b)


def test_keras_file_round_trip_in_a_fresh_process(tmp_path):
    # Train two steps, save, then one more epoch here and in a fresh process: same weights.
    inputs, targets = _data()
    paths = []
    for index, optimizer in enumerate(
        [
            optimizers.LearnedOptimizer(optimizers.MLPRule(0.01, 20, seed=5)),
            optimizers.LSTMOptimizer(optimizers.LSTMRule(0.01, 20, seed=5)),
            optimizers.HyperparameterController(optimizers.ControllerRule(0.05, 20, seed=5)),
        ]
    ):
        model = _model()
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(inputs, targets, batch_size=32, epochs=1, shuffle=False, verbose=0)
        path = str(tmp_path / f"model{index}.keras")
        model.save(path)
        model.fit(inputs, targets, batch_size=32, epochs=1, shuffle=False, verbose=0)
        np.save(str(tmp_path / f"expected{index}.npy"), model.trainable_weights[0].numpy())
        paths.append(path)
    np.save(str(tmp_path / "inputs.npy"), inputs)
    np.save(str(tmp_path / "targets.npy"), targets)
    program = f"""
import numpy as np, keras, tf_meta
inputs = np.load({str(tmp_path / "inputs.npy")!r})
targets = np.load({str(tmp_path / "targets.npy")!r})
for index, path in enumerate({paths!r}):
    model = keras.saving.load_model(path)
    assert type(model.optimizer).__module__.startswith("tf_meta"), type(model.optimizer)
    model.fit(inputs, targets, batch_size=32, epochs=1, shuffle=False, verbose=0)
    expected = np.load({str(tmp_path)!r} + f"/expected{{index}}.npy")
    np.testing.assert_array_equal(model.trainable_weights[0].numpy(), expected)
print("restored")
"""
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert "restored" in result.stdout, result.stderr[-3000:]


def test_jit_compile_and_mirrored_strategy_give_the_plain_updates(mirrored_strategy):
    make = lambda: optimizers.LearnedOptimizer(optimizers.MLPRule(0.01, 20, seed=6))  # noqa: E731
    plain = _train(make())
    compiled = _train(make(), jit_compile=True)
    with mirrored_strategy.scope():
        mirrored = _train(make())
    for a, b, c in zip(plain, compiled, mirrored, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="`rule` must be"):
        optimizers.LearnedOptimizer(rule=keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"`rule_weights\[0\]` has shape"):
        optimizers.LearnedOptimizer(
            optimizers.MLPRule(), rule_weights=[np.zeros((2, 2))] + [None] * 5
        )
    with pytest.raises(ValueError, match="`training_steps`"):
        optimizers.MLPRule(training_steps=0)
    with pytest.raises(ValueError, match="`hidden_units`"):
        optimizers.MLPRule(hidden_units=(1,))
    with pytest.raises(ValueError, match="`learning_rate`"):
        optimizers.LSTMRule(learning_rate=-1.0)
