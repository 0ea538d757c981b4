import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta import optimizers
from tf_meta.optimizers.mlp_rule import FEATURES, OUTPUTS


def _sgd_rule(learning_rate):
    """An MLP rule whose hand-set weights make it plain SGD (see learned_optimizer_test)."""
    rule = optimizers.MLPRule(learning_rate, 10, hidden_units=(4,), dtype="float64")
    hidden = np.zeros((len(FEATURES), 4))
    hidden[FEATURES.index("gradient"), :2] = [1.0, -1.0]
    output = np.zeros((4, len(OUTPUTS)))
    output[:2, OUTPUTS.index("scaled")] = [1.0, -1.0]
    rule.set_weights([hidden, np.zeros(4), output, np.zeros(len(OUTPUTS))])
    return rule


def _model():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")]
    )


def _meta_gradient(learner, x, y):
    with tf.GradientTape() as tape:
        predictions = learner(x, training=True)
        loss = tf.reduce_mean(tf.square(tf.cast(y, predictions.dtype) - predictions))
    return tape.gradient(loss, learner.trainable_variables)


def test_maml_meta_trains_its_inner_rule_with_the_initialization(regression_episode):
    # A learned rule set to SGD gives MAML's meta-gradient for the initialization, and a
    # meta-gradient for the rule's own weights, through both inner steps.
    x, y = regression_episode(np.random.default_rng(0))
    plain = tf_meta.MAML(_model(), 0.05, inner_steps=2, inner_loss="mse")
    learned = tf_meta.MAML(_model(), inner_steps=2, inner_loss="mse", inner_rule=_sgd_rule(0.05))
    expected = _meta_gradient(plain, x, y)
    gradients = _meta_gradient(learned, x, y)
    network = len(learned.model.trainable_variables)
    assert len(gradients) == network + len(learned.inner_rule.trainable_weights)
    for a, b in zip(gradients[:network], expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert all(g is not None for g in gradients[network:])
    assert np.abs(gradients[network + 2]).max() > 1e-3  # the rule's output layer
    config = learned.get_config()
    clone = tf_meta.MAML.from_config(config)
    assert isinstance(clone.inner_rule, optimizers.MLPRule)


def test_maml_refuses_a_rule_it_cannot_train():
    with pytest.raises(ValueError, match="`inner_rule` must be"):
        tf_meta.MAML(_model(), inner_rule=tf_meta.rules.GradientDescent(0.1))
    with pytest.raises(ValueError, match="exclude each other"):
        tf_meta.MAML(_model(), inner_rule=_sgd_rule(0.1), per_step_learning_rates=True)
    with pytest.raises(ValueError, match="does not apply to MetaSGD"):
        tf_meta.MetaSGD(_model(), inner_rule=_sgd_rule(0.1))
