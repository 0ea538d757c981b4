"""Multi-worker training: two worker processes on 127.0.0.1 against one process."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "multi_worker.py")
_specification = importlib.util.spec_from_file_location("multi_worker_program", PROGRAM)
program = importlib.util.module_from_spec(_specification)
_specification.loader.exec_module(program)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, free_ports):
    """Runs the worker program on two processes and returns worker 0's results."""
    output = tmp_path_factory.mktemp("multi_worker") / "results.json"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    source_root = os.path.dirname(os.path.dirname(tf_meta.__file__))
    processes = []
    for index in range(2):
        environment = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": source_root,
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, PROGRAM, str(output)],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [process.communicate(timeout=300)[0] for process in processes]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log[-3000:]
    return json.loads(output.read_text())


@pytest.mark.ci_params("name", "maml")  # Reptile: `pytest -m slow`
@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_two_workers_train_like_one_process(two_workers, name):
    assert two_workers["replicas"] == 2
    keras.utils.set_random_seed(0)
    learner = program.make_learner(name)
    initial = learner.get_weights()
    history = learner.fit(program.stream(None), steps_per_epoch=program.STEPS, verbose=0).history
    for expected, received, start in zip(
        learner.get_weights(), two_workers[name], initial, strict=True
    ):
        assert not np.allclose(expected, start)  # training moved every weight
        np.testing.assert_allclose(received, expected, rtol=1e-5, atol=1e-6)
    assert two_workers[name + "_loss"] == pytest.approx(history["loss"][0], rel=1e-5)


def test_keras_still_has_issue_20585(two_workers):
    """Fails when Keras fixes keras-team/keras#20585: then delete tf_meta/multi_worker_fit.py."""
    fixed = "keras-team/keras#20585 looks fixed: remove tf_meta.multi_worker_fit.MultiWorkerFit."
    assert "Attempt to convert a value (PerReplica" in two_workers["fit"], fixed
    assert "Invalid reduction dimension 0" in two_workers["reduce"], fixed


def test_shards_cover_each_global_meta_batch_once():
    full = next(iter(tf_meta.data.sinusoid(meta_batch_size=8, start_step=2)))[0]["support_x"]
    shares = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        stream = iter(tf_meta.data.sinusoid(meta_batch_size=8, start_step=2, input_context=context))
        shares += [next(stream)[0]["support_x"] for _ in range(2)]  # two replicas per pipeline
    np.testing.assert_array_equal(np.concatenate(shares), full)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"meta_batch_size": 6}, "multiple of the 4 replicas"),
        ({"meta_batch_size": 8, "num_tasks": 12}, "`num_tasks`=12 must be a multiple"),
        ({"meta_batch_size": 8, "start_step": -1}, "`start_step` must be a non-negative"),
    ],
)
def test_bad_sharding_raises(arguments, message):
    context = tf.distribute.InputContext(2, 0, 4)
    with pytest.raises(ValueError, match=message):
        tf_meta.data.sinusoid(input_context=context, **arguments)


def test_strategy_names():
    assert tf_meta.distribution.strategy_from_name("mirrored").num_replicas_in_sync == 2
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        tf_meta.distribution.strategy_from_name("horovod")
