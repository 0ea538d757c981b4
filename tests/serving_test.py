import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import tf_meta

WAYS = 5


def clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 10)
    points = (rng.normal(size=(20, 6))[labels] * 2 + rng.normal(size=(200, 6))).astype("float32")
    return points, labels


def episode(shots, queries, seed):
    dataset = tf_meta.data.episodes(clusters(), WAYS, shots, queries, 1, seed=seed)
    x, _ = next(iter(dataset))
    return {k: v.numpy()[0] for k, v in x.items()}


def classifier():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(WAYS)]
    )


LEARNERS = {
    "MAML": lambda: tf_meta.MAML(classifier(), inner_learning_rate=0.3, eval_inner_steps=3),
    "MetaSGD": lambda: tf_meta.MetaSGD(classifier(), inner_learning_rate=0.3),
    "ANIL": lambda: tf_meta.ANIL(classifier(), inner_learning_rate=0.3, eval_inner_steps=2),
    "Reptile": lambda: tf_meta.Reptile(classifier(), inner_learning_rate=0.01, inner_steps=3),
    "PrototypicalNetwork": lambda: tf_meta.PrototypicalNetwork(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    ),
}
SIZES = [(1, 3), (4, 2)]


def trained(name):
    keras.utils.set_random_seed(0)
    learner = LEARNERS[name]()
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    learner.fit(
        tf_meta.data.episodes(clusters(), WAYS, 2, 3, 4, seed=0), steps_per_epoch=3, verbose=0
    )
    return learner


def in_memory_outputs(learner, task):
    batch = {k: v[None] for k, v in task.items()}
    logits = learner.predict(batch, verbose=0)[0]
    return logits, tf.nn.softmax(logits).numpy()


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    directory, inputs_file, outputs_file = sys.argv[1:]
    inputs = np.load(inputs_file)
    outputs = {}
    for name in sorted({key.split("/")[0] for key in inputs.files}):
        model = tf.saved_model.load(f"{directory}/{name}")
        sizes = {key.split("/")[1] for key in inputs.files if key.startswith(name + "/")}
        for size in sorted(sizes):
            task = {k: inputs[f"{name}/{size}/{k}"] for k in ("support_x", "support_y", "query_x")}
            feed = {k: tf.constant(v) for k, v in task.items()}
            result = model.signatures["serving_default"](**feed)
            for key, value in result.items():
                outputs[f"{name}/{size}/{key}"] = value.numpy()
            base = model.signatures["predict"](inputs=tf.constant(task["query_x"]))
            outputs[f"{name}/{size}/base"] = base["predictions"].numpy()
            if "embed" in model.signatures:
                embedded = model.signatures["embed"](inputs=tf.constant(task["query_x"]))
                outputs[f"{name}/{size}/embeddings"] = embedded["embeddings"].numpy()
    assert not any(module.startswith("tf_meta") for module in sys.modules)
    np.savez(outputs_file, **outputs)
    """
)


def test_fresh_process_without_tf_meta_reproduces_every_learner(tmp_path):
    expected, inputs = {}, {}
    for name in LEARNERS:
        learner = trained(name)
        tf_meta.serving.export(learner, tmp_path / name)
        for shots, queries in SIZES:
            task = episode(shots, queries, seed=shots)
            size = f"{shots}x{queries}"
            for key, value in task.items():
                inputs[f"{name}/{size}/{key}"] = value
            logits, probabilities = in_memory_outputs(learner, task)
            expected[f"{name}/{size}/predictions"] = logits
            expected[f"{name}/{size}/probabilities"] = probabilities
            if isinstance(learner, tf_meta.PrototypicalNetwork):
                embeddings = learner.model(task["query_x"]).numpy()
                expected[f"{name}/{size}/embeddings"] = embeddings
                expected[f"{name}/{size}/base"] = embeddings
            else:
                model = learner.model
                expected[f"{name}/{size}/base"] = tf_meta.adaptation.predictions(
                    model, model.trainable_variables, model.non_trainable_variables, task["query_x"]
                ).numpy()
    np.savez(tmp_path / "inputs.npz", **inputs)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(tmp_path),
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "outputs.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    assert set(outputs.files) == set(expected)
    for key, value in expected.items():
        assert outputs[key].dtype == np.float32, key
        np.testing.assert_allclose(outputs[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def exported_maml(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export") / "maml"
    learner = trained("MAML")
    tf_meta.serving.export(learner, directory)
    return learner, directory


def test_saved_model_cli_run_with_npy_inputs(exported_maml, tmp_path):
    learner, directory = exported_maml
    task = episode(2, 3, seed=7)
    for key, value in task.items():
        np.save(tmp_path / f"{key}.npy", value)
    arguments = ";".join(f"{key}={tmp_path / key}.npy" for key in task)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    completed = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            str(directory),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            arguments,
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    logits, probabilities = in_memory_outputs(learner, task)
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "predictions.npy"), logits, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "probabilities.npy"), probabilities, rtol=1e-5, atol=1e-6
    )


def test_tf_serving_grpc_and_rest_requests_decode_to_the_same_answers(exported_maml):
    learner, directory = exported_maml
    task = episode(3, 2, seed=9)
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    # gRPC: a PredictRequest built as a client builds it, serialized and parsed back.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "maml"
    request.model_spec.signature_name = "serving_default"
    for key, value in task.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    grpc = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in received.inputs.items()})
    # REST: TF Serving's columnar "inputs" format.
    body = json.dumps(
        {"signature_name": "serving_default", "inputs": {k: v.tolist() for k, v in task.items()}}
    )
    decoded = json.loads(body)["inputs"]
    dtypes = {spec.name: spec.dtype for spec in signature.structured_input_signature[1].values()}
    rest = signature(**{k: tf.constant(v, dtype=dtypes[k]) for k, v in decoded.items()})
    logits, _ = in_memory_outputs(learner, task)
    for answer in (grpc, rest):
        np.testing.assert_allclose(answer["predictions"], logits, rtol=1e-5, atol=1e-5)


def test_signature_rejects_mismatched_features_and_label_dtype(exported_maml):
    _, directory = exported_maml
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    task = episode(1, 2, seed=3)
    # TensorFlow's own errors: a signature mismatch, or the shape check inside the graph.
    errors = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(errors, match="query_x|shape"):
        signature(
            support_x=tf.constant(task["support_x"]),
            support_y=tf.constant(task["support_y"]),
            query_x=tf.zeros((2, 7)),
        )
    with pytest.raises(errors, match="support_y|dtype|int32"):
        signature(
            support_x=tf.constant(task["support_x"]),
            support_y=tf.constant(task["support_y"], tf.float32),
            query_x=tf.constant(task["query_x"]),
        )


def test_export_under_mirrored_strategy_and_mixed_precision(tmp_path, mirrored_strategy):
    task = episode(2, 2, seed=1)
    with mirrored_strategy.scope():
        learner = trained("MAML")
    tf_meta.serving.export(learner, tmp_path / "mirrored")
    answer = tf.saved_model.load(str(tmp_path / "mirrored")).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in task.items()}
    )
    np.testing.assert_allclose(
        answer["predictions"], in_memory_outputs(learner, task)[0], rtol=1e-5, atol=1e-5
    )
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = trained("MAML")
    finally:
        keras.config.set_dtype_policy("float32")
    tf_meta.serving.export(mixed, tmp_path / "mixed")
    answer = tf.saved_model.load(str(tmp_path / "mixed")).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in task.items()}
    )
    assert answer["predictions"].dtype == tf.float32 and answer["probabilities"].dtype == tf.float32
    # bfloat16 keeps 8 bits of mantissa: the two graphs may round differently.
    np.testing.assert_allclose(
        answer["predictions"], in_memory_outputs(mixed, task)[0], rtol=3e-2, atol=5e-2
    )


def test_bad_exports_raise_and_leave_existing_directories_intact(tmp_path, exported_maml):
    unbuilt = tf_meta.MAML(classifier())
    unbuilt.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="not built: call it on an episode batch"):
        tf_meta.serving.export(unbuilt, tmp_path / "unbuilt")
    uncompiled = tf_meta.MAML(classifier(), eval_inner_steps=0)  # callable without a loss
    uncompiled({k: v[None] for k, v in episode(1, 1, seed=0).items()})
    with pytest.raises(ValueError, match="call `learner.compile"):
        tf_meta.serving.export(uncompiled, tmp_path / "uncompiled")
    assert not (tmp_path / "unbuilt").exists() and not (tmp_path / "uncompiled").exists()
    learner, _ = exported_maml
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="exists; pass `overwrite=True`"):
        tf_meta.serving.export(learner, target)
    assert (target / "keep.txt").read_text() == "precious"
    tf_meta.serving.export(learner, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "saved_model.pb").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
