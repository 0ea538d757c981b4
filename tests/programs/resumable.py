"""A meta-training run of the resumability tests, run as its own process.

    python resumable.py OUTPUT_DIR [--kill_at_step=K] [--initial=CHECKPOINT.keras]
        [--huge_targets_at_step=K] [--kill_in_backup=N]

It meta-trains MAML on sinusoid tasks with `tf_meta.training.train`, a backup in
OUTPUT_DIR/backup, `ModelCheckpoint`s to `.keras` and `.weights.h5`, and `TensorBoard` logs
with the inner-loss curve, and writes the final weights to OUTPUT_DIR/weights.npz.
`--kill_at_step` sends the process SIGKILL at the end of that meta-step; `--initial` starts
from a saved learner (`.keras`, or `.weights.h5` loaded into a fresh learner) instead of fresh
weights; `--huge_targets_at_step` multiplies the support targets of the tasks of that step by
1e30, so that their inner loop diverges. `--kill_in_backup` sends SIGKILL at the N-th point
(from 1) of the backups' writes: the weights file or the metadata half written, before or
after an fsync, before or after the rename (`WRITE_POINTS` per backup).
"""

import argparse
import json
import os
import signal

import keras
import numpy as np
import tensorflow as tf

import tf_meta

EPOCHS = 4
STEPS_PER_EPOCH = 3
META_BATCH_SIZE = 4


def make_learner():
    """The compiled learner, with weights from seed 0."""
    keras.utils.set_random_seed(0)
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return learner


def stream(start_step, context, huge_targets_at_step=None):
    """The training stream; optionally with diverging tasks at one step."""
    data = tf_meta.data.sinusoid(
        meta_batch_size=META_BATCH_SIZE, start_step=start_step, input_context=context
    )
    if huge_targets_at_step is None:
        return data
    steps = tf.data.Dataset.counter(start_step)

    def scale(step, batch):
        x, y = batch
        factor = tf.where(step == huge_targets_at_step, 1e30, 1.0)
        return {**x, "support_y": x["support_y"] * factor}, y

    return tf.data.Dataset.zip(steps, data).map(scale)


class KillAtStep(keras.callbacks.Callback):
    """Sends this process SIGKILL at the end of a given meta-step."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


WRITE_POINTS = 7  # per backup: weights, metadata, three fsyncs, before and after the rename


def kill_during_backups(point):
    """Patches the backup's writes so that the `point`-th of them SIGKILLs this process."""
    from tf_meta import backup

    count = [0]
    writing = [False]

    def tick(torn_file=None):
        if not writing[0]:
            return
        count[0] += 1
        if count[0] == point:
            if torn_file is not None:  # a write interrupted half way
                with open(torn_file, "r+b") as file:
                    file.truncate(os.path.getsize(torn_file) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    save_model, save_weights = backup.AtomicBackupAndRestore._save_model, keras.Model.save_weights
    fsync, replace, dump = backup._fsync, os.replace, json.dump

    def patched_save_model(self):
        writing[0] = True
        try:
            save_model(self)
            tick()  # after the rename
        finally:
            writing[0] = False

    def patched_save_weights(self, filepath, *arguments, **keywords):
        save_weights(self, filepath, *arguments, **keywords)
        tick(str(filepath))

    def patched_dump(value, file, *arguments, **keywords):
        dump(value, file, *arguments, **keywords)
        file.flush()
        tick(file.name)

    def patched_fsync(path):
        tick()
        fsync(path)

    def patched_replace(source, target):
        tick()
        replace(source, target)

    backup.AtomicBackupAndRestore._save_model = patched_save_model
    keras.Model.save_weights = patched_save_weights
    backup.json.dump = patched_dump
    backup._fsync = patched_fsync
    backup.os.replace = patched_replace


def run(
    output_dir, kill_at_step=None, initial=None, huge_targets_at_step=None, kill_in_backup=None
):
    """Trains to the end and writes the final weights; see the module docstring."""
    if initial is None or initial.endswith(".weights.h5"):
        learner = make_learner()
    else:
        learner = keras.saving.load_model(initial)
    if initial is not None and initial.endswith(".weights.h5"):
        learner.build_symbolically(stream(0, None).element_spec[0])
        learner.optimizer.build(learner.trainable_variables)
        learner.load_weights(initial)
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(output_dir, "epoch-{epoch}.keras")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "epoch-{epoch}.weights.h5"), save_weights_only=True
        ),
        tf_meta.callbacks.InnerLossCurve(
            next(iter(tf_meta.data.sinusoid(meta_batch_size=8, seed=1, num_tasks=8))), steps=3
        ),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
    ]
    if kill_at_step is not None:
        callbacks.append(KillAtStep(kill_at_step))
    if kill_in_backup is not None:
        kill_during_backups(kill_in_backup)
    tf_meta.training.train(
        learner,
        lambda start_step, context: stream(start_step, context, huge_targets_at_step),
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        backup_directory=os.path.join(output_dir, "backup"),
        callbacks=callbacks,
        verbose=0,
    )
    np.savez(os.path.join(output_dir, "weights.npz"), *learner.get_weights())
    return learner


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--kill_at_step", type=int)
    parser.add_argument("--initial")
    parser.add_argument("--huge_targets_at_step", type=int)
    parser.add_argument("--kill_in_backup", type=int)
    arguments = parser.parse_args()
    run(**vars(arguments))
