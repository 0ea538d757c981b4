"""Crash-safe backups of a training run: a reader only ever sees a complete backup."""

import json
import os
import re
import shutil
import tempfile
import warnings

import keras

_BACKUP = re.compile(r"^backup-(\d{9})$")
_WEIGHTS = "backup.weights.h5"
_METADATA = "training_metadata.json"


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, with backups that a crash cannot tear.

    Keras's callback overwrites its weights file and its metadata file in place, one after
    the other: a process killed while writing them leaves a truncated weights file (every
    rerun then fails to open it) or weights of one epoch beside metadata of another (the
    rerun resumes silently into a different run). Here each backup is one directory,
    `backup-<epoch>/`, holding the weights and the metadata: both are written into a
    temporary directory beside it, flushed to disk (`fsync`), and the directory is renamed
    into place, which is atomic. The newest `keep` backups are kept.

    At the start of training the newest complete backup is restored. A backup that cannot
    be read (torn by a failing disk or edited by hand), or whose metadata disagrees with
    its name, is skipped with a warning naming it, and the one before it is used; with
    none, training starts afresh. A failed restore leaves the model's and the optimizer's
    variables as they were. Leftover temporary directories of an interrupted write are
    removed.

    Args:
        backup_dir: The directory holding the backups.
        keep: How many complete backups to keep, at least 1.
        delete_checkpoint: Whether to delete `backup_dir` when training ends.

    Raises:
        ValueError: If `backup_dir` is empty or `keep` is not a positive integer.
    """

    def __init__(self, backup_dir: str, keep: int = 2, delete_checkpoint: bool = True):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be a positive integer; received {keep!r}.")
        super().__init__(os.fspath(backup_dir), delete_checkpoint=delete_checkpoint)
        self.keep = keep

    def _backups(self) -> list[tuple[int, str]]:
        """The complete backups, `(epoch, directory)`, newest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = []
        for name in os.listdir(self.backup_dir):
            match = _BACKUP.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.backup_dir, name)))
        return sorted(found, reverse=True)

    def on_train_begin(self, logs=None):
        """Restores the newest readable backup, if any."""
        if not self.model.built:
            raise ValueError(
                "To restore a backup the model must be built before `fit`; call it on a batch "
                f"of data first. Model {self.model.name} is unbuilt."
            )
        if os.path.isdir(self.backup_dir):
            for name in os.listdir(self.backup_dir):
                if name.startswith(".tmp-"):
                    shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)
        for epoch, directory in self._backups():
            try:
                self._restore(epoch, directory)
                return
            except (OSError, ValueError, KeyError) as error:
                warnings.warn(
                    f"Skipping the unreadable backup {directory!r} ({type(error).__name__}: "
                    f"{error}); trying the one before it.",
                    stacklevel=2,
                )

    def _restore(self, epoch: int, directory: str) -> None:
        with open(os.path.join(directory, _METADATA)) as file:
            metadata = json.load(file)
        if not isinstance(metadata, dict) or metadata.get("epoch") != epoch:
            raise ValueError(f"its metadata {metadata!r} does not name epoch {epoch}")
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        variables = list(self.model.variables)
        if optimizer is not None:
            variables += list(optimizer.variables)
        values = [variable.numpy() for variable in variables]
        try:
            self.model.load_weights(os.path.join(directory, _WEIGHTS))
        except Exception as error:
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
            raise OSError(str(error)) from error
        self.model._initial_epoch = epoch
        self._current_epoch = epoch

    def _save_model(self):
        def write(staging):
            self.model.save_weights(os.path.join(staging, _WEIGHTS), overwrite=True)
            metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
            with open(os.path.join(staging, _METADATA), "w") as file:
                json.dump(metadata, file)

        target = os.path.join(self.backup_dir, f"backup-{self._current_epoch:09d}")
        write_directory_atomically(target, write, overwrite=True)
        for _, directory in self._backups()[self.keep :]:
            shutil.rmtree(directory, ignore_errors=True)


def _fsync(path: str) -> None:
    """Flushes a file or a directory entry to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_directory_atomically(path: str, write, overwrite: bool = False) -> None:
    """Writes a directory so that a reader sees it complete or not at all.

    `write(staging)` fills a temporary directory `.tmp-*` beside `path`; its files are flushed
    to disk and it is renamed to `path`. If `write` raises, nothing is left behind. If the
    process dies first, only the `.tmp-*` directory remains, which readers skip.

    Args:
        path: The directory to create.
        write: A function writing the content into the directory it is given.
        overwrite: Whether an existing `path` is replaced; otherwise it is an error.

    Raises:
        FileExistsError: If `path` exists and `overwrite` is false.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists.")
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        write(staging)
        for name in os.listdir(staging):
            _fsync(os.path.join(staging, name))
        _fsync(staging)
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(f"{path!r} already exists.")
            shutil.rmtree(path)
        os.rename(staging, path)
        _fsync(parent)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def replace_atomically(path: str, write) -> None:
    """Writes a file so that `path` holds either its old content or the complete new one.

    `write(temporary_path)` writes the new content beside `path`; it is flushed to disk and
    renamed over `path`. If `write` raises, `path` is untouched and the temporary file gone.

    Args:
        path: The file to write.
        write: A function writing the content to the path it is given.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # writers that pick a format by suffix still can
    descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(descriptor)
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(directory)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
