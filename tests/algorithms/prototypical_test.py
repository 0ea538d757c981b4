import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def episode(rng, tasks=2, ways=3, shots=2, queries=4, features=5):
    x = {
        "support_x": rng.normal(size=(tasks, ways * shots, features)).astype("float32"),
        "support_y": np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)).astype("int32"),
        "query_x": rng.normal(size=(tasks, ways * queries, features)).astype("float32"),
    }
    # Shuffle the support order so prototypes must follow the labels, not positions.
    for task in range(tasks):
        order = rng.permutation(ways * shots)
        x["support_x"][task] = x["support_x"][task][order]
        x["support_y"][task] = x["support_y"][task][order]
    return x


def linear_encoder(features=5, dimensions=4):
    return keras.Sequential([keras.Input((features,)), keras.layers.Dense(dimensions)])


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
def test_logits_match_a_direct_numpy_computation(distance):
    rng = np.random.default_rng(0)
    x = episode(rng)
    learner = tf_meta.PrototypicalNetwork(linear_encoder(), distance=distance, cosine_scale=3.0)
    logits = learner.predict(x, verbose=0)
    kernel, bias = learner.model.get_weights()
    for task in range(2):
        support = x["support_x"][task] @ kernel + bias
        query = x["query_x"][task] @ kernel + bias
        prototypes = np.stack([support[x["support_y"][task] == c].mean(0) for c in range(3)])
        if distance == "cosine":
            unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
            expected = 3.0 * unit(query) @ unit(prototypes).T
        else:
            expected = -((query[:, None, :] - prototypes[None]) ** 2).sum(-1)
        np.testing.assert_allclose(logits[task], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        learner.adapt(x["support_x"][0], x["support_y"][0]).numpy(),
        np.stack(
            [(x["support_x"][0] @ kernel + bias)[x["support_y"][0] == c].mean(0) for c in range(3)]
        ),
        rtol=1e-5,
    )


def test_ways_follow_the_episode():
    rng = np.random.default_rng(1)
    learner = tf_meta.PrototypicalNetwork(linear_encoder())
    assert learner.predict(episode(rng, ways=3), verbose=0).shape == (2, 12, 3)
    assert learner.predict(episode(rng, ways=7), verbose=0).shape == (2, 28, 7)


def test_regression_targets_and_bad_labels_are_rejected():
    rng = np.random.default_rng(2)
    x = episode(rng)
    learner = tf_meta.PrototypicalNetwork(linear_encoder())
    regression = dict(x, support_y=rng.normal(size=(2, 6, 1)).astype("float32"))
    with pytest.raises(ValueError, match="support_y' must be \\[tasks, shots\\] of integers"):
        learner.predict(regression, verbose=0)
    negative = dict(x, support_y=x["support_y"] - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative labels"):
        learner.predict(negative, verbose=0)
    missing_class = dict(x, support_y=np.where(x["support_y"] == 1, 2, x["support_y"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="has no support example"):
        learner.predict(missing_class, verbose=0)
    with pytest.raises(ValueError, match="`distance`"):
        tf_meta.PrototypicalNetwork(linear_encoder(), distance="manhattan")


@pytest.mark.slow  # benchmarks/omniglot_accuracy.py measures this at length (RESULTS.md)
def test_brief_training_on_omniglot_is_accurate(omniglot_dir):
    train = tf_meta.data.episodes(
        tf_meta.data.load_omniglot("vinyals_train", data_dir=omniglot_dir),
        ways=20,
        shots=5,
        queries=5,
        meta_batch_size=1,
        seed=0,
    )
    pool = tf_meta.data.episodes(
        tf_meta.data.load_omniglot("vinyals_test", data_dir=omniglot_dir),
        ways=5,
        shots=1,
        queries=5,
        meta_batch_size=50,
        seed=1,
        num_tasks=100,
    )
    learner = tf_meta.PrototypicalNetwork(tf_meta.models.conv4(ways=None))
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = learner.evaluate(pool, verbose=0, return_dict=True)["accuracy"]
    learner.fit(train, steps_per_epoch=300, verbose=0, shuffle=False)
    scores = tf_meta.evaluation.task_scores(
        learner, pool, metric=keras.metrics.sparse_categorical_accuracy
    )
    mean, half_width = tf_meta.evaluation.confidence_interval(scores)
    # An untrained conv4 already scores about 0.59 (chance is 0.2); 300 episodes add over 0.1.
    assert mean - half_width > 0.65 and mean > before + 0.1, (before, mean, half_width)


def normalized_encoder(features=5, dimensions=4):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(6),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.ReLU(),
            keras.layers.Dense(dimensions),
        ]
    )


def test_a_training_step_embeds_each_episode_by_itself():
    """Loss, update and moving statistics of a step against a loop over episodes."""
    rng = np.random.default_rng(2)
    tasks, ways = 3, 3
    x = episode(rng, tasks=tasks, ways=ways)
    y = np.tile(np.repeat(np.arange(ways), 4), (tasks, 1)).astype("int32")
    keras.utils.set_random_seed(0)
    learner = tf_meta.PrototypicalNetwork(normalized_encoder())
    learner.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    learner(x)
    initial = learner.model.get_weights()

    def fresh_encoder():
        encoder = keras.models.clone_model(learner.model)
        encoder.set_weights(initial)
        return encoder

    losses, gradients, statistics = [], [], []
    for task in range(tasks):
        encoder = fresh_encoder()  # each episode starts from the same moving statistics
        with tf.GradientTape() as tape:
            embeddings = encoder(
                np.concatenate([x["support_x"][task], x["query_x"][task]]), training=True
            )
            support, query = embeddings[: ways * 2], embeddings[ways * 2 :]
            one_hot = tf.one_hot(x["support_y"][task], ways)
            prototypes = tf.transpose(one_hot) @ support / tf.reduce_sum(one_hot, 0)[:, None]
            logits = -tf.reduce_sum(tf.square(query[:, None] - prototypes[None]), -1)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y[task], logits, from_logits=True)
            )
        losses.append(float(loss))
        gradients.append(tape.gradient(loss, encoder.trainable_variables))
        statistics.append([v.numpy() for v in encoder.non_trainable_variables])

    history = learner.fit(tf.data.Dataset.from_tensors((x, y)), verbose=0).history
    np.testing.assert_allclose(history["loss"][0], np.mean(losses), rtol=1e-5)
    trained = learner.model.trainable_variables
    for variable, start, *per_task in zip(
        trained, fresh_encoder().trainable_variables, *gradients, strict=True
    ):
        expected = start.numpy() - 0.5 * np.mean(per_task, axis=0)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    for variable, *per_task in zip(learner.model.non_trainable_variables, *statistics, strict=True):
        np.testing.assert_allclose(variable.numpy(), np.mean(per_task, axis=0), rtol=1e-5)
    # The statistics moved (the check above is not one of unchanged values).
    moving_mean = learner.model.non_trainable_variables[0].numpy()
    assert not np.allclose(moving_mean, fresh_encoder().non_trainable_variables[0].numpy())
