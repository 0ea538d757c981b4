"""Property-based tests: malformed episode batches get a clear error and change nothing."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf_meta

WAYS, TASKS, FEATURES = 3, 2, 4
KEYS = ("support_x", "support_y", "query_x", "query_y")
ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)


def _valid_batch():
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(WAYS, dtype="int32"), (TASKS, 1))
    return {
        "support_x": rng.normal(size=(TASKS, WAYS, FEATURES)).astype("float32"),
        "support_y": labels,
        "query_x": rng.normal(size=(TASKS, WAYS, FEATURES)).astype("float32"),
        "query_y": labels.copy(),
    }


def _classifier():
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(WAYS)])


LEARNERS = {
    "MAML": lambda: tf_meta.MAML(_classifier(), inner_learning_rate=0.1),
    "Reptile": lambda: tf_meta.Reptile(_classifier(), inner_learning_rate=0.1, inner_steps=2),
    "PrototypicalNetwork": lambda: tf_meta.PrototypicalNetwork(
        keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(3)])
    ),
}


@pytest.fixture(scope="module", params=sorted(LEARNERS))
def learner_and_signature(request, tmp_path_factory):
    keras.utils.set_random_seed(0)
    learner = LEARNERS[request.param]()
    learner.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    batch = _valid_batch()
    y = batch.pop("query_y")
    learner.fit(tf.data.Dataset.from_tensors((batch, y)), verbose=0)  # builds everything
    path = str(tmp_path_factory.mktemp("export") / "model")
    tf_meta.serving.export(learner, path)
    return learner, tf.saved_model.load(path).signatures["serving_default"]


def _corrupt(batch, kind, key, position, draw_value):
    value = batch[key]
    index = tuple(p % s for p, s in zip(position, value.shape, strict=False))
    if kind == "drop_axis":
        batch[key] = value[..., 0] if value.ndim > 2 else value[0]
    elif kind == "add_axis":
        batch[key] = value[None]
    elif kind == "empty_axis":
        axis = 1 + position[0] % (value.ndim - 1)  # no task is allowed; no example is not
        batch[key] = np.take(value, [], axis=axis)
    elif kind == "tasks":
        batch[key] = value[:1]
    elif kind == "examples":
        batch[key] = value[:, :-1]
    elif kind == "nonfinite":
        value = value.astype("float32")
        value[index] = draw_value(st.sampled_from([np.nan, np.inf, -np.inf]))
        batch[key] = value
    elif kind == "label_range":
        value = value.copy()
        value[index] = draw_value(st.sampled_from([-1, WAYS, 1000]))
        batch[key] = value
    elif kind == "dtype":
        batch[key] = value.astype(draw_value(st.sampled_from(["bool", "complex64", "str"])))
    return batch


CORRUPTIONS = {
    "drop_axis": KEYS,
    "add_axis": KEYS,
    "empty_axis": KEYS,
    "tasks": ("support_y", "query_x", "query_y"),
    "examples": ("support_y", "query_y"),
    "nonfinite": ("support_x", "query_x"),
    "label_range": ("support_y", "query_y"),
    "dtype": KEYS,
}


def _snapshot(learner):
    return [variable.numpy().copy() for variable in learner.variables + learner.optimizer.variables]


def _assert_refused(call, names):
    with pytest.raises(ERRORS) as raised:
        call()
    message = str(raised.value)
    assert any(name in message for name in names), f"{type(raised.value).__name__}: {message}"


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_malformed_batches_are_refused_and_change_nothing(learner_and_signature, data):
    learner, signature = learner_and_signature
    kind = data.draw(st.sampled_from(sorted(CORRUPTIONS)), label="kind")
    key = data.draw(st.sampled_from(CORRUPTIONS[kind]), label="key")
    position = data.draw(st.tuples(*[st.integers(0, 10)] * 3), label="position")
    batch = _corrupt(_valid_batch(), kind, key, position, data.draw)
    # What names the problem: the key, or for labels TensorFlow's "label value" message.
    names = (key, "label value", "labels") if kind == "label_range" else (key,)
    before = _snapshot(learner)
    y = batch.pop("query_y")
    x = batch
    _assert_refused(lambda: learner.fit(tf.data.Dataset.from_tensors((x, y)), verbose=0), names)
    _assert_refused(
        lambda: learner.evaluate(tf.data.Dataset.from_tensors((x, y)), verbose=0), names
    )
    if key != "query_y":
        _assert_refused(lambda: learner.predict(tf.data.Dataset.from_tensors(x), verbose=0), names)
        if kind not in ("tasks", "add_axis") and all(len(value) for value in x.values()):
            # The signature takes one task, as typed tensors (what a TF Serving request
            # carries): the task of the batch that holds the corruption.
            task = position[0] % min(len(value) for value in x.values())
            one_task = {name: tf.constant(value[task]) for name, value in x.items()}
            # TensorFlow names a mistyped signature input by its position.
            signature_names = (*names, "expected to be a") if kind == "dtype" else names
            _assert_refused(lambda: signature(**one_task), signature_names)
    for expected, received in zip(before, _snapshot(learner), strict=True):
        np.testing.assert_array_equal(received, expected)
