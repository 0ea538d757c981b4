"""Meta-training that survives a crash: Keras's `fit` with `BackupAndRestore` on a task stream."""

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tf_meta.backup import AtomicBackupAndRestore
from tf_meta.distribution import distribute_stream


def train(
    learner: keras.Model,
    stream: Callable[[int, tf.distribute.InputContext | None], tf.data.Dataset],
    epochs: int,
    steps_per_epoch: int,
    backup_directory: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose="auto",
) -> keras.callbacks.History:
    """Meta-trains a compiled learner with `fit`, resuming where an earlier run stopped.

    The learner continues from the meta-step its optimizer has counted, and the task stream
    is built to start at that step, so an interrupted run continues on the tasks the
    uninterrupted run would have seen:
    - With `backup_directory`, `tf_meta.backup.AtomicBackupAndRestore` writes the weights,
      optimizer state and epoch at the end of every epoch, as one directory renamed into
      place once complete (keeping the previous backup). Run the same command again after
      a crash (even a SIGKILL in the middle of a write) and it restores the last complete
      backup and goes on from there; work done since that backup is redone, the same way.
      Choose `steps_per_epoch` as the backup interval.
    - A learner loaded from a checkpoint written at the end of an epoch (`ModelCheckpoint`
      to `.keras`, or `.weights.h5` loaded into a compiled learner) continues likewise.
    Keras's `TerminateOnNaN(raise_error=True)` stops the run at the first NaN or infinite
    loss (a diverged inner loop), before the epoch's backup would overwrite the last good
    one; the error names the meta-step of the run and the batch of the epoch.

    Under a distribution strategy (the learner created in `strategy.scope()`), every
    input pipeline builds only its replicas' shares of each global meta-batch.

    Args:
        learner: A compiled meta-learner.
        stream: `stream(start_step, input_context)` returns the training stream of
            `tf_meta.data` built with those arguments, e.g. `lambda start_step, context:
            tf_meta.data.sinusoid(meta_batch_size=25, start_step=start_step,
            input_context=context)`.
        epochs: The epoch at which training ends (as in `fit`).
        steps_per_epoch: Meta-steps per epoch: the interval between backups.
        backup_directory: Where the backups are kept; None for no backup.
        callbacks: Further Keras callbacks (`ModelCheckpoint`, `TensorBoard`, ...).
        verbose: Keras verbosity.

    Returns:
        The `History` of `fit`.

    Raises:
        ValueError: If the learner is not compiled, or has taken a number of meta-steps that
            is not a whole number of epochs of `steps_per_epoch` (a backup or checkpoint
            written with another `steps_per_epoch`).
        RuntimeError: From `TerminateOnNaN`, when the loss becomes NaN or infinite.
    """
    if not learner.compiled:
        raise ValueError(f"`learner` ({learner.name}) must be compiled before training.")
    strategy = learner.distribute_strategy
    callbacks = [keras.callbacks.TerminateOnNaN(raise_error=True), *callbacks]
    if backup_directory is not None:
        backup = AtomicBackupAndRestore(backup_directory)
        with strategy.scope():
            element = stream(0, None).element_spec[0]
            learner.build_symbolically(element)
            backup.set_model(learner)
            backup.on_train_begin()  # restores the last backup, if any, before the stream
        callbacks.insert(0, backup)
    start_step = int(learner.optimizer.iterations.numpy())
    if start_step % steps_per_epoch:
        raise ValueError(
            f"The learner has taken {start_step} meta-steps, not a whole number of epochs "
            f"of `steps_per_epoch`={steps_per_epoch}; resume with the `steps_per_epoch` of "
            "the run that wrote the backup or checkpoint."
        )
    try:
        return learner.fit(
            distribute_stream(strategy, lambda context: stream(start_step, context)),
            epochs=epochs,
            initial_epoch=start_step // steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
    except RuntimeError as error:
        if "NaN or Inf loss" not in str(error):
            raise
        step = int(learner.optimizer.iterations.numpy())
        raise RuntimeError(f"Meta-step {step} of the run (counting from 1): {error}") from error
