"""Resumable meta-training: SIGKILL and resume, checkpoints, NaN, TensorBoard."""

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "resumable.py")
_specification = importlib.util.spec_from_file_location("resumable_program", PROGRAM)
program = importlib.util.module_from_spec(_specification)
_specification.loader.exec_module(program)


def _run_program(output_dir, *arguments):
    environment = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.path.dirname(os.path.dirname(tf_meta.__file__)),
    }
    return subprocess.run(
        [sys.executable, PROGRAM, str(output_dir), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _newest_backup(output_dir):
    """The directory of the newest complete backup."""
    return sorted(glob.glob(os.path.join(output_dir, "backup", "backup-*")))[-1]


def _weights(output_dir):
    with np.load(os.path.join(output_dir, "weights.npz")) as archive:
        return [archive[name] for name in archive.files]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """An uninterrupted run, in this process: its directory and final weights."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    initial = program.make_learner().get_weights()
    final = program.run(str(directory)).get_weights()
    for start, end in zip(initial, final, strict=True):
        assert not np.allclose(start, end)  # every weight trained
    return directory, final


def test_sigkill_mid_epoch_then_same_command_ends_like_uninterrupted(tmp_path, uninterrupted):
    killed = _run_program(tmp_path, f"--kill_at_step={program.STEPS_PER_EPOCH * 2 + 1}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not os.path.exists(tmp_path / "weights.npz")
    with open(os.path.join(_newest_backup(tmp_path), "training_metadata.json")) as file:
        assert json.load(file)["epoch"] == 2  # the last backup: end of epoch 2

    resumed = _run_program(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for expected, received in zip(uninterrupted[1], _weights(tmp_path), strict=True):
        np.testing.assert_array_equal(received, expected)


def _killed_in_backup_then_resumed(directory, point, expected):
    killed = _run_program(directory, f"--kill_in_backup={point}")
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
    resumed = _run_program(directory)
    assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
    for weight, received in zip(expected, _weights(directory), strict=True):
        np.testing.assert_array_equal(received, weight)


def test_sigkill_during_the_first_backup_write_then_same_command_ends_like_uninterrupted(
    tmp_path, uninterrupted
):
    """The first backup's weights torn: no backup exists yet (the slow test tries them all)."""
    _killed_in_backup_then_resumed(tmp_path, 1, uninterrupted[1])


@pytest.mark.slow  # every write point of the run's first three backups: about 15 minutes
def test_sigkill_at_every_point_of_the_backup_writes(tmp_path, uninterrupted):
    for point in range(1, 3 * program.WRITE_POINTS + 1):
        _killed_in_backup_then_resumed(tmp_path / str(point), point, uninterrupted[1])


def test_torn_backups_are_skipped_with_a_warning(tmp_path):
    learner = program.make_learner()
    directory = str(tmp_path / "backup")
    tf_meta.training.train(
        learner, program.stream, epochs=2, steps_per_epoch=3, backup_directory=directory
    )
    assert not os.path.exists(directory)  # deleted at the end of training
    backup = tf_meta.backup.AtomicBackupAndRestore(directory, delete_checkpoint=False)
    learner = program.make_learner()
    learner.build_symbolically(program.stream(0, None).element_spec[0])
    learner.optimizer.build(learner.trainable_variables)
    backup.set_model(learner)
    for epoch in (1, 2):
        backup._current_epoch = epoch
        backup._save_model()
    newest = _newest_backup(tmp_path)
    with open(os.path.join(newest, "training_metadata.json"), "w") as file:
        file.write('{"epoch": ')  # torn
    before = [v.numpy() for v in learner.variables]
    learner.optimizer.iterations.assign(99)
    with pytest.warns(UserWarning, match="backup-000000002"):
        backup.on_train_begin()
    assert learner._initial_epoch == 1
    assert int(learner.optimizer.iterations.numpy()) == 0  # restored from epoch 1's backup
    for value, variable in zip(before, learner.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.ci_params("checkpoint", "epoch-2.keras")  # weights only: `pytest -m slow`
@pytest.mark.parametrize("checkpoint", ["epoch-2.keras", "epoch-2.weights.h5"])
def test_checkpoint_continues_bit_for_bit_in_a_fresh_process(tmp_path, uninterrupted, checkpoint):
    directory, final = uninterrupted
    continued = _run_program(tmp_path, f"--initial={directory / checkpoint}")
    assert continued.returncode == 0, continued.stderr[-2000:]
    for expected, received in zip(final, _weights(tmp_path), strict=True):
        np.testing.assert_array_equal(received, expected)


def test_diverging_inner_loop_stops_the_run_and_keeps_the_last_good_backup(tmp_path):
    step = program.STEPS_PER_EPOCH * 2 + 1  # epoch 3, batch 1
    diverged = _run_program(tmp_path, f"--huge_targets_at_step={step}")
    assert diverged.returncode == 1
    assert (
        f"RuntimeError: Meta-step {step + 1} of the run (counting from 1): NaN or Inf loss "
        "encountered at batch 1" in diverged.stderr
    )
    with open(os.path.join(_newest_backup(tmp_path), "training_metadata.json")) as file:
        assert json.load(file)["epoch"] == 2
    learner = program.make_learner()
    learner.build_symbolically(program.stream(0, None).element_spec[0])
    learner.optimizer.build(learner.trainable_variables)
    learner.load_weights(os.path.join(_newest_backup(tmp_path), "backup.weights.h5"))
    assert int(learner.optimizer.iterations.numpy()) == 2 * program.STEPS_PER_EPOCH
    assert all(np.isfinite(weight).all() for weight in learner.get_weights())


def test_tensorboard_logs_outer_loss_query_metrics_and_inner_losses(uninterrupted):
    directory, _ = uninterrupted
    tags = {}
    for path in glob.glob(str(directory / "logs" / "train" / "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    for name in ["loss", "mae"] + [f"inner_loss_step_{step}" for step in range(4)]:
        assert sorted(tags[f"epoch_{name}"]) == list(range(program.EPOCHS)), name


def test_checkpoint_from_another_steps_per_epoch_is_refused():
    learner = program.make_learner()
    learner.fit(program.stream(0, None), steps_per_epoch=2, verbose=0)
    weights = learner.get_weights()
    with pytest.raises(ValueError, match="taken 2 meta-steps, not a whole number of epochs"):
        tf_meta.training.train(learner, program.stream, epochs=2, steps_per_epoch=3)
    for before, after in zip(weights, learner.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_uncompiled_learner_is_refused():
    learner = tf_meta.MAML(tf_meta.models.mlp())
    with pytest.raises(ValueError, match="must be compiled"):
        tf_meta.training.train(learner, program.stream, epochs=1, steps_per_epoch=1)


def test_training_under_a_strategy_equals_one_device(mirrored_strategy):
    keras.utils.set_random_seed(0)
    reference = program.make_learner()
    tf_meta.training.train(reference, program.stream, epochs=2, steps_per_epoch=2, verbose=0)
    with mirrored_strategy.scope():
        learner = program.make_learner()
    tf_meta.training.train(learner, program.stream, epochs=2, steps_per_epoch=2, verbose=0)
    for expected, received in zip(reference.get_weights(), learner.get_weights(), strict=True):
        np.testing.assert_allclose(received, expected, rtol=1e-5, atol=1e-6)
