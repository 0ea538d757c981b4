import keras
import numpy as np
import pytest

import tf_meta


def classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh", name="body"),
            keras.layers.Dense(3, name="head"),
        ]
    )


def episode_batch(tasks=2, shots=2, queries=3, ways=3):
    rng = np.random.default_rng(0)
    x = {
        "support_x": rng.normal(size=(tasks, shots * ways, 4)).astype("float32"),
        "support_y": np.tile(np.arange(ways), (tasks, shots)).astype("int32"),
        "query_x": rng.normal(size=(tasks, queries * ways, 4)).astype("float32"),
    }
    return x, np.tile(np.arange(ways), (tasks, queries)).astype("int32")


def one_meta_step(learner):
    learner.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = episode_batch()
    learner.fit(x, y, batch_size=2, epochs=1, verbose=0)
    return [variable.numpy() for variable in learner.model.trainable_variables]


@pytest.mark.ci_params("learner_class", tf_meta.MAML)  # the others: `pytest -m slow`
@pytest.mark.parametrize("learner_class", [tf_meta.MAML, tf_meta.MetaSGD, tf_meta.ANIL])
@pytest.mark.parametrize("first_order", [False, True])
def test_body_trains_as_from_a_zero_head_and_head_variables_stay(learner_class, first_order):
    arguments = {"inner_learning_rate": 0.3, "inner_steps": 2, "first_order": first_order}
    zeroed = learner_class(classifier(), zeroing_trick=True, **arguments)
    reference = learner_class(classifier(), **arguments)
    for variable in reference.model.get_layer("head").weights:
        variable.assign(np.zeros(variable.shape, "float32"))
    initial = [weight.numpy() for weight in classifier().trainable_variables]

    zeroed_weights, reference_weights = one_meta_step(zeroed), one_meta_step(reference)

    for head, initial_head in zip(zeroed_weights[2:], initial[2:], strict=True):
        np.testing.assert_array_equal(head, initial_head)  # read as zeros, never updated
    assert np.abs(reference_weights[2]).max() > 1e-3  # without the trick, the head moves
    for weight, expected in zip(zeroed_weights[:2], reference_weights[:2], strict=True):
        np.testing.assert_allclose(weight, expected, rtol=1e-5, atol=1e-7)
    assert np.abs(zeroed_weights[0] - initial[0]).max() > 1e-4


def test_last_layer_that_is_not_dense_raises_at_construction():
    with pytest.raises(ValueError, match="zeroing_trick.*Flatten"):
        tf_meta.MAML(tf_meta.models.conv4(ways=None), zeroing_trick=True)


def test_adaptation_starts_from_a_zero_head():
    learner = tf_meta.MAML(
        classifier(),
        zeroing_trick=True,
        inner_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, _ = episode_batch()
    np.testing.assert_array_equal(learner.adapt_and_predict(x, steps=0), 0.0)
    assert np.abs(learner.adapt_and_predict(x, steps=1)).max() > 1e-3


def test_config_keeps_the_option():
    learner = tf_meta.MAML(classifier(), zeroing_trick=True)
    assert tf_meta.MAML.from_config(learner.get_config()).zeroing_trick
