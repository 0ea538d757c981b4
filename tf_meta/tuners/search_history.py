"""An append-only record of finished hyperparameter searches, each with its task."""

import json
import math
import os
import warnings

import keras_tuner
import numpy as np

from tf_meta.backup import write_directory_atomically
from tf_meta.rules.update_rule import check_positive_integer
from tf_meta.tuners.meta_features import meta_features

FORMAT_VERSION = 1
_RECORD = "record.json"
_EXAMPLES = "examples.npz"


def _oracle(search):
    oracle = getattr(search, "oracle", search)
    if not isinstance(oracle, keras_tuner.Oracle):
        raise ValueError(
            f"`search` must be a KerasTuner tuner or oracle; received {type(search).__name__}."
        )
    return oracle


def _check_name(name) -> None:
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or os.sep in name
        or (os.altsep and os.altsep in name)
    ):
        raise ValueError(
            f"`name` must be a non-empty file name without a path separator or a leading "
            f"dot; received {name!r}."
        )


class SearchHistory:
    """Finished KerasTuner searches, each with a description of its task, on disk.

    A history is a directory with one subdirectory per search, named after it:

        history/
          sinusoid-amplitude-3/
            record.json    # human-readable: the search and its task's description
            examples.npz   # `x` and `y`: the sample of the task the description is from

    `record.json` holds `format_version`, `name`, `objective` (`name`, `direction`), `space`
    (the search space's `keras_tuner.HyperParameters` config), `trials` (each finished
    trial's `values` and finite `score`, in the order they started), `meta_features` (see
    `meta_features`) and `information` (anything JSON the caller adds). A record is written
    into a temporary `.tmp-*` directory, flushed and renamed, so a reader sees it whole or
    not at all, and the history is append-only: a name is never rewritten. Any tuner's
    search can be added, tf_meta's or KerasTuner's.

    Args:
        directory: The history's directory; created when the first record is added.
        max_examples: Examples of a task kept in its record (a deterministic sample).

    Example:
        history = SearchHistory("history")
        tuner.search(train, validation_data=validation, epochs=3)
        history.add("sinusoid-amplitude-3", tuner, x_sample, y_sample)
        records = SearchHistory("history").records()  # in this or another process

    References:
        Feurer, Springenberg and Hutter. Initializing Bayesian Hyperparameter Optimization
        via Meta-Learning. AAAI 2015.
    """

    def __init__(self, directory: str, max_examples: int = 256):
        check_positive_integer("max_examples", max_examples, minimum=4)
        self.directory = os.fspath(directory)
        self.max_examples = max_examples

    def add(self, name: str, search, x, y, information: dict | None = None) -> dict:
        """Records a finished search and its task.

        Args:
            name: The record's name, a file name unique in this history.
            search: The `keras_tuner.Tuner` (or its oracle) after `search`.
            x: Inputs of the searched task, `[n, ...]` (at least 4).
            y: Its targets: integer labels `[n]`, or float regression targets.
            information: Optional JSON-serializable facts about the task (its family, its
                generating parameters), stored as they are.

        Returns:
            The record, as `records` returns it.

        Raises:
            ValueError: If `name` is not a plain file name or is already recorded, `search`
                is not a KerasTuner tuner or oracle or has no finished trial with a finite
                score, `x` and `y` are not a task (see `meta_features`), or `information`
                is not JSON-serializable. Nothing is written then.
        """
        _check_name(name)
        path = os.path.join(self.directory, name)
        if os.path.exists(path):
            raise ValueError(f"`name` {name!r} is already recorded in {self.directory!r}.")
        oracle = _oracle(search)
        trials = []
        for trial_id in oracle.start_order:
            trial = oracle.trials[trial_id]
            if trial.status == "COMPLETED" and trial.score is not None:
                if math.isfinite(trial.score):
                    trials.append(
                        {"values": dict(trial.hyperparameters.values), "score": trial.score}
                    )
        if not trials:
            raise ValueError(
                f"`search` has no finished trial with a finite score to record as {name!r}."
            )
        x, y = np.asarray(x), np.asarray(y)
        if len(x) > self.max_examples and len(x) == len(y):
            keep = np.sort(
                np.random.default_rng(0).choice(len(x), self.max_examples, replace=False)
            )
            x, y = x[keep], y[keep]
        record = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "objective": {"name": oracle.objective.name, "direction": oracle.objective.direction},
            "space": oracle.hyperparameters.get_config(),
            "trials": trials,
            "meta_features": meta_features(x, y),
            "information": information or {},
        }
        try:
            text = json.dumps(record, indent=1)
        except TypeError as error:
            raise ValueError(f"`information` must be JSON-serializable: {error}") from error

        def write(staging):
            with open(os.path.join(staging, _RECORD), "w") as file:
                file.write(text)
            np.savez(os.path.join(staging, _EXAMPLES), x=x, y=y)

        write_directory_atomically(path, write)
        return dict(record, x=x, y=y)

    def records(self) -> list[dict]:
        """Every complete record, sorted by name.

        Each is the dict stored in `record.json` with the task's sample added as `x` and
        `y`. A record left unfinished by a killed writer (`.tmp-*`) or one that cannot be
        read is skipped with a warning naming its directory; the others are returned.

        Returns:
            A list of record dicts.
        """
        if not os.path.isdir(self.directory):
            return []
        found = []
        for entry in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, entry)
            if not os.path.isdir(path):
                continue
            if entry.startswith(".tmp-"):
                warnings.warn(
                    f"Skipping {path!r}: a record whose writer stopped before it finished.",
                    stacklevel=2,
                )
                continue
            try:
                with open(os.path.join(path, _RECORD)) as file:
                    record = json.load(file)
                if record.get("format_version") != FORMAT_VERSION:
                    raise ValueError(f"format_version {record.get('format_version')!r}")
                with np.load(os.path.join(path, _EXAMPLES)) as examples:
                    record.update(x=examples["x"], y=examples["y"])
            except (OSError, ValueError, KeyError) as error:
                warnings.warn(f"Skipping the unreadable record {path!r}: {error}", stacklevel=2)
                continue
            found.append(record)
        return found

    def __len__(self) -> int:
        return len(self.records())
